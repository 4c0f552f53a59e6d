"""Rich views of finished runs and searches: summary panels, metric tables, confusion matrices, run lists."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from cnnjobs.run.find import Run
from cnnjobs.run.summary import ClassRow, TrainSummary, TuneSummary

_STATUS_STYLE = {"succeeded": "green", "failed": "red", "interrupted": "yellow", "running": "cyan"}
_TRIAL_STYLE = {"done": "green", "stopped": "yellow", "error": "red", "running": "cyan", "pending": "dim"}


def fmt(value: Any) -> str:
    """A number as a table shows it: integers whole, others to 4 decimals; '-' for nothing."""
    if value is None or value == "":
        return "-"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return f"{number:.4f}" if not number.is_integer() else str(int(number))


def _grid(rows: list[tuple[str, Any]]) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    for label, value in rows:
        if value is not None:
            table.add_row(label, str(value))
    return table


def summary_panel(summary: TrainSummary) -> Table:
    """Key facts of a run: status, arch, epochs, time, folder, and what to do next."""
    restarts = ", ".join(f"epoch {r.from_epoch} ({r.reason})" for r in summary.restarts) or None
    return _grid([("job", summary.job), ("run", summary.run_id), ("status", summary.status), ("arch", summary.arch),
                  ("epochs", f"{summary.epochs_run} of {summary.epochs}"), ("restarts", restarts),
                  ("time", _seconds(summary.duration_s, summary.to_first_step_s)), ("ray", summary.ray),
                  ("run dir", summary.run_dir),
                  ("data", summary.timing.verdict if summary.timing else None),
                  ("error", summary.error), ("resume", summary.resume)])


def _seconds(total: float | None, first_step: float | None) -> str | None:
    if total is None:
        return None
    return f"{total:.1f} s" + (f" (first step after {first_step:.1f} s)" if first_step is not None else "")


def metrics_table(summary: TrainSummary) -> Table:
    """Loss and accuracy per split (train/val at the best epoch, test of the best model), and per task."""
    tasks = sorted({task for split in summary.metrics.values() for task in split.tasks})
    table = Table(title=f"best epoch {fmt(summary.best_epoch)} by {summary.monitor}")
    table.add_column("split")
    table.add_column("loss", justify="right")
    table.add_column("acc", justify="right")
    if len(tasks) > 1:
        for task in tasks:
            table.add_column(f"{task} acc", justify="right")
    for split in ("train", "val", "test"):
        if split in summary.metrics:
            values = summary.metrics[split]
            per_task = [fmt(values.tasks[t].acc if t in values.tasks else None) for t in tasks] if len(tasks) > 1 \
                else []
            table.add_row(split, fmt(values.loss), fmt(values.acc), *per_task)
    return table


def epochs_table(run: Run) -> Table:
    """One row per epoch from `metrics.csv`."""
    table = Table(title="epochs")
    columns = ["epoch", "train/loss", "train/acc", "val/loss", "val/acc", "lr", "epoch_s"]
    for column in columns:
        table.add_column(column, justify="right")
    best = str(run.summary.best_epoch) if isinstance(run.summary, TrainSummary) else None
    for row in run.metrics:
        table.add_row(*[fmt(row.get(c)) for c in columns], style="bold green" if row.get("epoch") == best else None)
    return table


def confusion_table(task: str, matrix: list[list[int]], classes: list[str] | None = None,
                    split: str = "test") -> Table:
    """A confusion matrix: rows are true classes, columns predicted ones."""
    names = classes or [str(i) for i in range(len(matrix))]
    table = Table(title=f"{split} confusion: {task} (rows true, columns predicted)")
    table.add_column("")
    for name in names:
        table.add_column(name, justify="right")
    for i, (name, row) in enumerate(zip(names, matrix)):
        table.add_row(name, *[f"[bold]{v}[/]" if i == j else (str(v) if v else "[dim]0[/]") for j, v in enumerate(row)])
    return table


def per_class_table(task: str, rows: list[ClassRow], split: str = "test") -> Table:
    """Per class of a task: images, hits, recall (seed 003's holdout table) and precision (seed 001)."""
    table = Table(title=f"{split} per class: {task}")
    for column, justify in (("class", "left"), ("correct", "right"), ("images", "right"), ("recall", "right"),
                            ("precision", "right")):
        table.add_column(column, justify=justify)
    percent = lambda value: "-" if value is None else f"{100 * value:.0f}%"  # noqa: E731
    for row in rows:
        table.add_row(row.name, str(row.correct), str(row.count), percent(row.recall), percent(row.precision))
    return table


def runs_table(runs: list[Run]) -> Table:
    """`cnnjobs runs`: one line per run."""
    table = Table(title="runs")
    for column in ("job", "run id", "kind", "status", "best metric", "test acc", "duration", "path"):
        table.add_column(column, overflow="fold" if column == "path" else "ellipsis")
    for run in runs:
        s = run.summary
        if s is None:
            table.add_row(run.job_name, run.run_id, "?", "[red]incomplete[/]", "-", "-", "-", run.path)
            continue
        best = f"{s.monitor}={fmt(s.best_metric)}" if s.best_metric is not None else "-"
        test = fmt(s.metrics["test"].acc) if isinstance(s, TrainSummary) and "test" in s.metrics else "-"
        duration = f"{s.duration_s} s" if s.duration_s is not None else "-"
        status = f"[{_STATUS_STYLE.get(s.status, 'white')}]{s.status}[/]"
        table.add_row(s.job, s.run_id, s.kind, status, best, test, duration, run.path)
    return table


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
        table.add_row(fmt(record.get("rank")), str(record.get("trial")),
                      f"[{_TRIAL_STYLE.get(status, 'white')}]{status}{stopped}[/]",
                      *[fmt(record.get(k)) for k in keys], f"{fmt(record.get('epochs'))}/{epochs}",
                      fmt(record.get("best")), fmt(record.get("best_epoch")), fmt(record.get("last")),
                      fmt(record.get("test/acc")))
    return table


def tune_panel(summary: TuneSummary) -> Table:
    """Key facts of a search: status, best trial and its values, epochs spent against running every trial."""
    best = summary.best_trial
    full = summary.trials * summary.epochs
    next_step = f"cnnjobs submit {summary.run_dir}/{summary.best_job}" if summary.best_job else summary.resume
    return _grid([
        ("job", summary.job), ("run", summary.run_id), ("status", summary.status),
        ("trials", f"{summary.trials} ({summary.trials_stopped_early} stopped early, "
                   f"{fmt(summary.concurrency)} at a time)"),
        ("epochs", f"{summary.epochs_run} run of {full} for every trial to the end"),
        ("best", f"{summary.monitor} = {fmt(summary.best_metric)} in trial {best.trial}" if best else None),
        ("values", ", ".join(f"{k}={fmt(v)}" for k, v in best.values.items()) if best else None),
        ("time", _seconds(summary.duration_s, None)), ("run dir", summary.run_dir), ("next", next_step),
        ("error", summary.error)])


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


def layers_table(card: Any) -> Table:
    """`cnnjobs models NAME` / `--job JOB`: layers in execution order with output shapes (Keras' model.summary()),
    trainable and frozen parameters, and one head per task."""
    frozen = card.params - card.trainable
    heads = "; ".join(f"{h.task}: {h.output}, {h.outputs} output(s) for {h.classes} classes" for h in card.heads)
    table = Table(title=f"{card.arch} on {card.channels}x{card.image_size[0]}x{card.image_size[1]} images: "
                        f"{card.params:,} parameters, {card.trainable:,} trainable, {frozen:,} frozen",
                  caption=f"shapes are per image: channels, height, width. Heads: {heads}")
    for column, justify in (("layer", "left"), ("type", "left"), ("output shape", "right"), ("params", "right"),
                            ("trainable", "right")):
        table.add_column(column, justify=justify)
    for row in card.layers:
        style = "dim" if row.params and not row.trainable else None
        table.add_row(row.name, row.kind, str(tuple(row.output_shape)), f"{row.params:,}", f"{row.trainable:,}",
                      style=style)
    return table
