"""Run the cnnjobs command line and kill it with SIGKILL at a chosen moment, for the crash-consistency tests:

    python -m tests.crash POINT -- submit JOB.yaml --set ...

POINT, each a moment a real `kill -9` (the OOM killer, a lost terminal) can fall on:
    start         the run folder and its first summary are written, no epoch has begun
    ahead:N       checkpoint N is complete in the run folder while metrics.csv holds only the epochs before N
                  (the driver's recording of epoch N and later is held back: the order a kill can fall in)
    evaluation    the final evaluation of the test split is under way (a loop running in this process)
    pictures      the run's pictures are being drawn, every epoch recorded
    trial-done    a search's trial has just finished while another one is running

The process kills itself, so the moment is exact; nothing of cnnjobs is changed but the function the point hooks.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def hook(point: str) -> None:
    from cnnjobs.train import loop, runner

    if point == "start":
        runner.training_data = lambda *args, **kwargs: die()
    elif point.startswith("ahead:"):
        import ray

        from cnnjobs.run import checkpoints, layout

        held = int(point.split(":")[1])

        def record(tracker: Any, run: Any, rows: list[dict[str, Any]], timeout: float | None = None,
                   tracking: Any = None) -> Any:
            snapshot = ray.get(tracker.poll.remote(), timeout=timeout)
            kept = [row for row in snapshot.epochs if int(row["epoch"]) < held]
            if kept != rows:
                rows[:] = kept
                run.write_metrics(rows)
                if tracking is not None:
                    tracking.epochs(rows)
            if any(c.endswith(layout.checkpoint_dir(held)) for c in checkpoints.in_run(run.location)):
                die()
            return snapshot

        runner._record = record
    elif point == "evaluation":
        real = loop.evaluate
        loop.evaluate = lambda t, name, limit=0: die() if name == "test" else real(t, name, limit)
    elif point == "pictures":
        runner.draw = lambda *args, **kwargs: die()
    elif point == "trial-done":
        from cnnjobs.tune.trials import Tracker

        complete = Tracker.on_trial_complete

        def on_trial_complete(self: Any, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            complete(self, iteration, trials, trial, **info)
            if any(other.status == "RUNNING" for other in trials if other is not trial):
                die()

        Tracker.on_trial_complete = on_trial_complete
    else:
        raise SystemExit(f"unknown point {point!r}")


def main() -> None:
    point, separator, *args = sys.argv[1:]
    assert separator == "--", __doc__
    hook(point)
    from cnnjobs.cli import main as cnnjobs

    sys.exit(cnnjobs(args))


if __name__ == "__main__":
    main()
