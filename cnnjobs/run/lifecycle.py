"""One owner for a run's life: status, timings, errors, logs and the final write, for `submit` and `search` alike."""

from __future__ import annotations

import logging
import time
import traceback
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Protocol, TypeVar

from cnnjobs.errors import Interrupted, JobError, TrainingFailed
from cnnjobs.run.folder import RunDir, utc_now
from cnnjobs.run.summary import TrainSummary, TuneSummary
from cnnjobs.storage import StorageError

S = TypeVar("S", TrainSummary, TuneSummary)
log = logging.getLogger("cnnjobs")


class Tracked(Protocol):
    """What the lifecycle needs of a run's tracking (`results.tracking.Tracking`)."""

    def close(self, summary: Any) -> None: ...

    def finish(self, summary: Any, run: RunDir) -> None: ...


@contextmanager
def run_lifecycle(run: RunDir, summary: S, *, resume: str, finish: Callable[[S], None] | None = None,
                  tracking: Tracked | None = None) -> Iterator[S]:
    """Own `run` from its first summary to its last; the caller trains inside the block and fills in `summary`.

    On the way out, whatever happened, the summary gets its outcome, times and error, `finish(summary)` runs
    (metrics from the epochs, plots), the tracking server gets what is left (`tracking.close`: what it did not
    get is listed in the summary), the summary is written last, and then sent with the run's files and status
    (`tracking.finish`):
      - no exception: `succeeded`, unless the caller set another status (a search that Tune cut short);
      - Ctrl-C: `interrupted`, with `resume` (the command that continues the run) in the summary; raised as
        `Interrupted` (a KeyboardInterrupt) carrying that command;
      - the run folder's storage stopped answering (retries spent; `storage.StorageError`, also when raised in a
        worker): nothing more is written there; raised as `TrainingFailed` with the command that resumes the run
        (the summary still says `running`, which `--resume` accepts once this driver is gone);
      - `JobError` (bad input found late, e.g. by the cluster): `failed` with its message; re-raised;
      - anything else: `failed`, the traceback in `logs/cnnjobs.log`; raised as `TrainingFailed`.
    `summary.duration_s` adds up over the sessions of a resumed run.
    """
    earlier = summary.duration_s or 0.0
    summary.status, summary.error, summary.resume = "running", None, None
    run.write_summary(summary)
    try:
        yield summary
    except KeyboardInterrupt as exc:
        summary.status, summary.resume = "interrupted", resume
        _close(run, summary, earlier, finish, tracking)
        raise Interrupted(run.location, resume) from exc
    except BaseException as exc:
        down = storage_failure(exc)
        if down is not None:  # nothing more can be written there: the last good checkpoint and rows stay
            run.log_traceback(traceback.format_exc())
            summary.status = "failed"
            if tracking is not None:
                tracking.close(summary)
            raise TrainingFailed(f"{summary.kind} failed: {down}; the last good checkpoint is kept: continue with "
                                 f"{resume} once the storage answers again", run.location) from exc
        if isinstance(exc, JobError):
            summary.status, summary.error = "failed", str(exc)
            _close(run, summary, earlier, finish, tracking)
            raise
        logged = run.log_traceback(traceback.format_exc())
        summary.status, summary.error = "failed", first_line(exc)
        _close(run, summary, earlier, finish, tracking)
        raise TrainingFailed(f"{summary.kind} failed: {summary.error} (traceback in {logged})",
                             run.location) from exc
    if summary.status == "running":
        summary.status = "succeeded"
    elif summary.status == "interrupted":
        summary.resume = resume
    _close(run, summary, earlier, finish, tracking)


def _close(run: RunDir, summary: S, earlier: float, finish: Callable[[S], None] | None,
           tracking: Tracked | None) -> None:
    summary.finished = utc_now()
    summary.duration_s = round(earlier + time.time() - run.started, 1)
    if finish is not None:
        try:
            finish(summary)
        except Exception:  # noqa: BLE001 - the outcome must be written even when a plot cannot be drawn
            run.log_traceback(traceback.format_exc())
            log.exception("finishing the run folder failed")
    if tracking is not None:
        tracking.close(summary)
    run.write_summary(summary)
    run.sync_logs(force=True)
    if tracking is not None:
        tracking.finish(summary, run)


def first_line(exc: BaseException) -> str:
    """An exception's message in one line (its class name when it has none)."""
    text = str(exc).strip() or exc.__class__.__name__
    return text.splitlines()[0][:300]


def storage_failure(exc: BaseException) -> StorageError | None:
    """The `StorageError` behind `exc`, if any: raised here, or in the loop and handed over by Ray (as a cause,
    or as one of a worker group's failures)."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, StorageError):
            return current
        pending += [current.__cause__, current.__context__, getattr(current, "cause", None)]
        failures = getattr(current, "worker_failures", None)
        if isinstance(failures, dict):
            pending += [failure for failure in failures.values() if isinstance(failure, BaseException)]
    return None
