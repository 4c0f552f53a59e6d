"""From the per-epoch metric rows to the summary: best epoch, metrics per split and task, the per-class table."""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from cnnjobs.metrics import per_class_precision, per_class_recall
from cnnjobs.run.summary import ClassRow, SplitMetrics, TaskMetrics, TrainSummary

CONFUSION = "confusion"  # row key: `<split>/confusion`, task -> matrix, in the last row (the best model's)


def metric_value(value: Any) -> float | None:
    """A metric's value as a float; None for what is not one (empty cells, flags, confusion matrices, and the NaN
    a table fills in for an epoch that did not measure it)."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value) if isinstance(value, (numbers.Real, str)) else None
    except ValueError:
        return None
    return None if number is None or math.isnan(number) else number


def split_metrics(row: dict[str, Any], split: str) -> SplitMetrics:
    """`{"val/loss": .., "val/digit/acc": ..}` -> SplitMetrics(loss=.., tasks={"digit": TaskMetrics(acc=..)})."""
    combined: dict[str, Any] = {}
    tasks: dict[str, dict[str, Any]] = {}
    for key, value in row.items():
        parts = key.split("/")
        if parts[0] != split or isinstance(value, dict) or value in (None, ""):
            continue
        if len(parts) == 2 and parts[1] in TaskMetrics.model_fields:
            combined[parts[1]] = value
        elif len(parts) == 3 and parts[2] in TaskMetrics.model_fields:
            tasks.setdefault(parts[1], {})[parts[2]] = value
    return SplitMetrics(**combined, tasks={task: TaskMetrics(**values) for task, values in tasks.items()})


def class_rows(confusion: list[list[int]], classes: list[str] | None = None) -> list[ClassRow]:
    """Per class: images, hits, recall (seed 003's holdout table) and precision (seed 001's per digit)."""
    matrix = np.asarray(confusion)
    names = classes or [str(i) for i in range(len(matrix))]
    recall, precision = per_class_recall(matrix), per_class_precision(matrix)
    number = lambda value: None if np.isnan(value) else float(value)  # noqa: E731
    return [ClassRow(name=name, count=int(matrix[i].sum()), correct=int(matrix[i, i]), recall=number(recall[i]),
                     precision=number(precision[i])) for i, name in enumerate(names)]


def summarize_epochs(summary: TrainSummary, rows: list[dict[str, Any]]) -> None:
    """Fill `summary` from the epoch rows: train/val at the best epoch, test of the best model (last row), and
    the confusion matrix and per-class table of the evaluated split (test, or val when there is no test split)."""
    summary.epochs_run = len(rows)
    if not rows:
        return
    last = rows[-1]
    best_epoch = int(last.get("best_epoch") or last["epoch"])
    best = next((row for row in rows if int(row["epoch"]) == best_epoch), last)
    summary.best_epoch = best_epoch
    summary.best_metric = best.get(summary.monitor)
    summary.stopped_early = bool(last.get("stopped_early"))
    metrics = {"train": split_metrics(best, "train"), "val": split_metrics(best, "val")}
    if any(key.startswith("test/") for key in last):
        metrics["test"] = split_metrics(last, "test")
    summary.metrics = metrics
    for split in ("test", "val"):
        confusion = last.get(f"{split}/{CONFUSION}")
        if confusion:
            classes = summary.data.classes if summary.data else {}
            summary.evaluated, summary.confusion = split, confusion
            summary.per_class = {task: class_rows(matrix, classes.get(task)) for task, matrix in confusion.items()}
            break
