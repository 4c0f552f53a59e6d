"""Turning the per-epoch metric rows into the summary: best epoch, and metrics per split and per task."""

from __future__ import annotations

from typing import Any

import numpy as np

SPLITS = ("train", "val", "test")


def per_class_accuracy(confusion: np.ndarray) -> np.ndarray:
    """Share of each true class predicted right (recall); NaN for a class without examples."""
    counts = confusion.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, np.diag(confusion) / counts, np.nan)


def macro_f1(confusion: np.ndarray) -> float:
    """F1 averaged over the classes that occur as truth or prediction (scikit-learn's `average="macro"`)."""
    true_pos = np.diag(confusion).astype(np.float64)
    actual, predicted = confusion.sum(1), confusion.sum(0)
    seen = (actual + predicted) > 0
    if not seen.any():
        return 0.0
    return float(np.mean(2 * true_pos[seen] / (actual[seen] + predicted[seen])))


def per_class_table(confusion: list[list[int]], classes: list[str] | None = None) -> list[dict[str, Any]]:
    """Seed 003's holdout table: per class its examples, hits and accuracy."""
    matrix = np.asarray(confusion)
    names = classes or [str(i) for i in range(len(matrix))]
    accuracy = per_class_accuracy(matrix)
    return [{"class": name, "count": int(matrix[i].sum()), "correct": int(matrix[i, i]),
             "acc": None if np.isnan(accuracy[i]) else float(accuracy[i])} for i, name in enumerate(names)]


def nest(row: dict[str, Any], split: str) -> dict[str, Any]:
    """`{"val/loss": .., "val/digit/acc": ..}` -> `{"loss": .., "acc": .., "tasks": {"digit": {"acc": ..}}}`."""
    out: dict[str, Any] = {"tasks": {}}
    for key, value in row.items():
        parts = key.split("/")
        if parts[0] != split or isinstance(value, dict):
            continue
        if len(parts) == 2:
            out[parts[1]] = value
        elif len(parts) == 3:
            out["tasks"].setdefault(parts[1], {})[parts[2]] = value
    return out


def split_metrics(rows: list[dict[str, Any]], monitor: str,
                  classes: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """Summary fields from the epoch rows: train/val at the best epoch, test of the best model (last row),
    and the test split's per-class accuracy (class names from `classes`, task -> names)."""
    last = rows[-1]
    best_epoch = int(last.get("best_epoch") or last["epoch"])
    best = next(row for row in rows if row["epoch"] == best_epoch)
    metrics = {"train": nest(best, "train"), "val": nest(best, "val")}
    if any(key.startswith("test/") for key in last):
        metrics["test"] = nest(last, "test")
    confusion = last.get("test/confusion")
    return {
        "best_epoch": best_epoch,
        "best_metric": best.get(monitor),
        "stopped_early": bool(last.get("stopped_early")),
        "metrics": metrics,
        "test_confusion": confusion,
        "test_per_class": {task: per_class_table(matrix, (classes or {}).get(task))
                           for task, matrix in (confusion or {}).items()},
    }
