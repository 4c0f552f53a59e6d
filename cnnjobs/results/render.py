"""Rich views of runs: live training progress, the final summary, run lists and metric tables."""

from __future__ import annotations

from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from cnnjobs.results.runs import Run
from cnnjobs.train.progress import Snapshot


def _fmt(value: Any) -> str:
    if value is None or value == "":
        return "-"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return f"{number:.4f}" if not number.is_integer() else str(int(number))


class LiveProgress:
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

    def __enter__(self) -> "LiveProgress":
        self.live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.live.__exit__(*exc)

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
            self.line.plain = f"epoch {last['epoch']}: " + "  ".join(f"{k} {_fmt(last.get(k))}" for k in shown) + \
                f"  (best {self.monitor} at epoch {last.get('best_epoch')})"


def metrics_table(summary: dict[str, Any]) -> Table:
    """Loss and accuracy per split (train/val at the best epoch, test of the best model), and per task."""
    metrics = summary.get("metrics") or {}
    tasks = sorted({task for split in metrics.values() for task in split.get("tasks", {})})
    table = Table(title=f"best epoch {summary.get('best_epoch', '-')} by {summary.get('monitor')}")
    table.add_column("split")
    table.add_column("loss", justify="right")
    table.add_column("acc", justify="right")
    if len(tasks) > 1:
        for task in tasks:
            table.add_column(f"{task} acc", justify="right")
    for split in ("train", "val", "test"):
        if split in metrics:
            values = metrics[split]
            per_task = [_fmt(values["tasks"].get(t, {}).get("acc")) for t in tasks] if len(tasks) > 1 else []
            table.add_row(split, _fmt(values.get("loss")), _fmt(values.get("acc")), *per_task)
    return table


def summary_panel(summary: dict[str, Any]) -> Table:
    """Key facts of a run: status, arch, epochs, time, folder."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    for label, value in [("job", summary.get("job")), ("run", summary.get("run_id")),
                         ("status", summary.get("status")), ("arch", summary.get("arch")),
                         ("epochs", f"{summary.get('epochs_run', '-')} of {summary.get('epochs', '-')}"),
                         ("time", f"{summary.get('duration_s', '-')} s"), ("run dir", summary.get("run_dir")),
                         ("error", summary.get("error"))]:
        if value is not None:
            table.add_row(label, str(value))
    return table


def epochs_table(run: Run) -> Table:
    """One row per epoch from `metrics.csv`."""
    table = Table(title="epochs")
    columns = ["epoch", "train/loss", "train/acc", "val/loss", "val/acc", "lr", "epoch_s"]
    for column in columns:
        table.add_column(column, justify="right")
    best = str(run.summary.get("best_epoch"))
    for row in run.metrics:
        table.add_row(*[_fmt(row.get(c)) for c in columns], style="bold green" if row.get("epoch") == best else None)
    return table


def confusion_table(task: str, matrix: list[list[int]], classes: list[str] | None = None) -> Table:
    """A confusion matrix: rows are true classes, columns predicted ones."""
    names = classes or [str(i) for i in range(len(matrix))]
    table = Table(title=f"test confusion: {task} (rows true, columns predicted)")
    table.add_column("")
    for name in names:
        table.add_column(name, justify="right")
    for i, (name, row) in enumerate(zip(names, matrix)):
        table.add_row(name, *[f"[bold]{v}[/]" if i == j else (str(v) if v else "[dim]0[/]") for j, v in enumerate(row)])
    return table


def runs_table(runs: list[Run]) -> Table:
    """`cnnjobs runs`: one line per run."""
    table = Table(title="runs")
    for column in ("job", "run id", "kind", "status", "best metric", "test acc", "duration", "path"):
        table.add_column(column)
    for run in runs:
        s = run.summary
        best = f"{s.get('monitor')}={_fmt(s.get('best_metric'))}" if s.get("best_metric") is not None else "-"
        test = _fmt(((s.get("metrics") or {}).get("test") or {}).get("acc"))
        duration = f"{s['duration_s']} s" if "duration_s" in s else "-"
        table.add_row(s.get("job", "?"), s.get("run_id", "?"), s.get("kind", "train"), s.get("status", "?"), best,
                      test, duration, run.path)
    return table
