"""Live views while a job runs: epoch and batch bars for `submit`, the trial table for `tune`."""

from __future__ import annotations

from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

from cnnjobs.cli.render import fmt, trials_table
from cnnjobs.train.progress import Snapshot


class _LiveView:
    """A rich `Live` view (`self.live`) used as a context manager, with lines printed above it."""

    live: Live

    def __enter__(self) -> "_LiveView":
        self.live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.live.__exit__(*exc)

    def warn(self, text: str) -> None:
        """A line above the live view, kept on screen (e.g. the tracking server not answering)."""
        self.live.console.print(Text(text, style="yellow"))


class LiveProgress(_LiveView):
    """Epoch and batch bars with the latest metrics, fed by `submit(on_progress=...)`."""

    def __init__(self, console: Console, epochs: int, monitor: str) -> None:
        self.monitor = monitor
        self.bars = Progress(TextColumn("{task.description:>8}"), BarColumn(), MofNCompleteColumn(),
                             TextColumn("{task.fields[note]}"), TimeElapsedColumn(), TextColumn("eta"),
                             TimeRemainingColumn(), console=console)
        self.epoch_bar = self.bars.add_task("epoch", total=epochs, note="")
        self.batch_bar = self.bars.add_task("batch", total=None, note="")
        self.status = Text("")
        self.line = Text("")
        self.live = Live(Group(self.status, self.bars, self.line), console=console, refresh_per_second=8,
                         transient=False)

    def __call__(self, phase: str, snapshot: Snapshot | None, rows: list[dict[str, Any]]) -> None:
        self.status.plain = f"[{phase}]" if phase != "training" else ""
        if snapshot is not None:
            if snapshot.steps:
                self.bars.update(self.batch_bar, total=snapshot.steps, completed=snapshot.step,
                                 note=f"loss {snapshot.loss:.4f}" if snapshot.loss is not None else "")
            self.bars.update(self.epoch_bar, completed=len(rows))
        if rows:
            last = rows[-1]
            shown = ["train/loss", "train/acc", "val/loss", "val/acc"]
            self.line.plain = f"epoch {last['epoch']}: " + "  ".join(f"{k} {fmt(last.get(k))}" for k in shown) + \
                f"  (best {self.monitor} at epoch {last.get('best_epoch')})" + _waiting(last)


def _waiting(row: dict[str, Any]) -> str:
    """The data-wait doctor's figure for the last epoch: the share of step time spent waiting for data."""
    parts = [float(row.get(f"time/{part}_s") or 0) for part in ("wait", "compute", "sync")]
    return f"  waiting for data {parts[0] / sum(parts):.0%}" if sum(parts) > 0 else ""


class LiveTrials(_LiveView):
    """The live table of a search's trials, fed by `cnnjobs.tune.tuner(on_progress=...)`."""

    def __init__(self, console: Console, keys: list[str], metric: str, epochs: int) -> None:
        self.keys, self.metric, self.epochs = keys, metric, epochs
        self.status = Text("")
        self.live = Live(Group(self.status), console=console, refresh_per_second=4, transient=True)

    def __call__(self, phase: str, rows: list[Any]) -> None:
        from cnnjobs.tune.trials import records

        if phase != "tuning":
            self.live.console.print(phase)  # printed above the live view, kept on screen
            return
        done = sum(row.status in ("done", "stopped", "error") for row in rows)
        self.status.plain = f"{done} of {len(rows)} trials finished"
        self.live.update(Group(self.status, trials_table(records(rows, self.keys), self.keys, self.metric,
                                                         self.epochs, title="trials (live), best first")))
