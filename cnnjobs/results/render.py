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


def per_class_table(task: str, rows: list[dict[str, Any]]) -> Table:
    """Seed 003's holdout table: accuracy per true class on the test split."""
    table = Table(title=f"test accuracy per class: {task}")
    for column, justify in (("class", "left"), ("correct", "right"), ("images", "right"), ("acc", "right")):
        table.add_column(column, justify=justify)
    for row in rows:
        acc = "-" if row["acc"] is None else f"{100 * row['acc']:.0f}%"
        table.add_row(str(row["class"]), str(row["correct"]), str(row["count"]), acc)
    return table


def models_table(rows: list[Any], classes: int) -> Table:
    """`cnnjobs models`: the registry, with parameters counted at each row's input size."""
    table = Table(title=f"architectures (parameters with one {classes}-class head)")
    for column in ("name", "parameters", "at size", "default size", "min size", "pretrained", "source"):
        table.add_column(column, justify="right" if column == "parameters" else "left", no_wrap=column != "source")
    for row in rows:
        params = f"{row.params:,}" if row.params is not None else "(too small)"
        table.add_row(row.name, params, "x".join(map(str, row.image_size)), "x".join(map(str, row.default_size)),
                      str(row.min_size), "ImageNet" if row.pretrained else "-", row.source)
    return table


def layers_table(name: str, rows: list[Any], params: int) -> Table:
    """`cnnjobs models NAME`: layers in execution order with output shapes (Keras' model.summary())."""
    table = Table(title=f"{name}: {params:,} parameters", caption="shapes are per image: channels, height, width")
    for column, justify in (("layer", "left"), ("type", "left"), ("output shape", "right"), ("params", "right")):
        table.add_column(column, justify=justify)
    for row in rows:
        table.add_row(row.name, row.kind, str(tuple(row.output_shape)), f"{row.params:,}")
    return table


_TRIAL_STYLE = {"done": "green", "stopped": "yellow", "error": "red", "running": "cyan", "pending": "dim"}


def trials_table(records: list[dict[str, Any]], keys: list[str], metric: str, epochs: int | str,
                 title: str = "trials, best first") -> Table:
    """A search's trials (records as in `tune_results.csv`): status, sampled values, epochs, metric."""
    table = Table(title=title)
    for column in ("#", "trial", "status", *keys, "epochs", f"best {metric}", "best epoch", f"last {metric}",
                   "test acc"):
        table.add_column(column, justify="right" if column not in ("trial", "status") else "left")
    for record in records:
        status = str(record.get("status"))
        stopped = " (early)" if status == "stopped" else ""
        table.add_row(_fmt(record.get("rank")), str(record.get("trial")),
                      f"[{_TRIAL_STYLE.get(status, 'white')}]{status}{stopped}[/]",
                      *[_fmt(record.get(k)) for k in keys], f"{_fmt(record.get('epochs'))}/{epochs}",
                      _fmt(record.get("best")), _fmt(record.get("best_epoch")), _fmt(record.get("last")),
                      _fmt(record.get("test/acc")))
    return table


class LiveTrials:
    """The live table of a search's trials, fed by `cnnjobs.tune.search(on_progress=...)`."""

    def __init__(self, console: Console, keys: list[str], metric: str, epochs: int) -> None:
        self.keys, self.metric, self.epochs = keys, metric, epochs
        self.status = Text("")
        self.notes: list[str] = []
        self.live = Live(Group(self.status), console=console, refresh_per_second=4, transient=True)

    def __enter__(self) -> "LiveTrials":
        self.live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.live.__exit__(*exc)

    def __call__(self, phase: str, rows: list[Any]) -> None:
        from cnnjobs.tune import records

        if phase != "tuning":
            self.live.console.print(phase)  # printed above the live view, kept on screen
            return
        done = sum(row.status in ("done", "stopped", "error") for row in rows)
        self.status.plain = f"{done} of {len(rows)} trials finished"
        self.live.update(Group(self.status, trials_table(records(rows, self.keys), self.keys, self.metric,
                                                         self.epochs, title="trials (live), best first")))


def tune_panel(summary: dict[str, Any]) -> Table:
    """Key facts of a search: status, best trial and its values, epochs spent against running every trial."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    best = summary.get("best_trial") or {}
    full = (summary.get("trials") or 0) * (summary.get("epochs") or 0)
    for label, value in [("job", summary.get("job")), ("run", summary.get("run_id")),
                         ("status", summary.get("status")),
                         ("trials", f"{summary.get('trials')} ({summary.get('stopped_early', 0)} stopped early, "
                                    f"{summary.get('concurrency', '-')} at a time)"),
                         ("epochs", f"{summary.get('epochs_run', '-')} run of {full} for every trial to the end"),
                         ("best", f"{summary.get('monitor')} = {_fmt(summary.get('best_metric'))} in trial "
                                  f"{best.get('trial')}" if best else None),
                         ("values", ", ".join(f"{k}={_fmt(v)}" for k, v in (best.get("values") or {}).items())
                          if best else None),
                         ("time", f"{summary.get('duration_s', '-')} s"), ("run dir", summary.get("run_dir")),
                         ("next", f"cnnjobs submit {summary.get('run_dir')}/{summary['best_job']}"
                          if summary.get("best_job") else summary.get("resume")),
                         ("error", summary.get("error"))]:
        if value is not None:
            table.add_row(label, str(value))
    return table
