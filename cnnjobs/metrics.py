"""Metric names, their direction and their comparison, in one place; and the metrics a confusion matrix gives.

A metric is named `<split>/<kind>` for the combination of all tasks (`val/loss` is the weighted sum of the task
losses, `val/acc` and `val/f1` the means over tasks) or `<split>/<task>/<kind>` for one task
(`val/articleType/top5`). Losses are better low, everything else high. Early stopping, reduce-on-plateau,
checkpoint ranking, Tune and the result tables all read names, directions and comparisons from here.

Torch-free (numpy only): the job schema validates monitors with it without importing torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import numpy as np

Mode = Literal["min", "max"]
SPLITS = ("train", "val", "test")
COMBINED_KINDS = ("loss", "acc", "f1")
TASK_KINDS = ("loss", "acc", "f1", "top5")
TOP_K = 5  # top-5 accuracy is reported for tasks with more than TOP_K classes

_NAME = re.compile(r"^(?P<split>train|val|test)/(?:(?P<task>[A-Za-z0-9_]+)/(?P<task_kind>loss|acc|f1|top5)|"
                   r"(?P<kind>loss|acc|f1))$")
MONITOR_HELP = "must look like val/loss, val/acc, val/f1 or val/<task>/acc|loss|f1|top5"


@dataclass(frozen=True)
class Metric:
    """One metric name, taken apart: `val/digit/acc` is split `val`, task `digit`, kind `acc`."""

    split: str
    kind: str
    task: str | None = None

    @property
    def name(self) -> str:
        return f"{self.split}/{self.task}/{self.kind}" if self.task else f"{self.split}/{self.kind}"

    @property
    def mode(self) -> Mode:
        """Losses are better low, accuracies and F1 high."""
        return "min" if self.kind == "loss" else "max"

    @classmethod
    def parse(cls, name: str) -> "Metric":
        """Take a metric name apart; ValueError (with the grammar) when it is not one."""
        match = _NAME.match(name)
        if not match:
            raise ValueError(f"{MONITOR_HELP} (got {name!r})")
        return cls(match["split"], match["task_kind"] or match["kind"], match["task"])


def metric_name(split: str, kind: str, task: str | None = None) -> str:
    """`metric_name("val", "acc", "digit")` -> `val/digit/acc`; without a task, the combined metric."""
    return Metric(split, kind, task).name


def check_monitor(name: str) -> str:
    """A metric that can pick the best epoch: measured on train or val (test is measured once, at the end)."""
    metric = Metric.parse(name)
    if metric.split == "test":
        raise ValueError(f"the test split is measured once, at the end; monitor val/... instead (got {name!r})")
    return name


def metric_mode(name: str) -> Mode:
    """The natural direction of a metric: losses are better low, everything else high."""
    return Metric.parse(name).mode


def is_better(value: float, best: float | None, mode: str, min_delta: float = 0.0) -> bool:
    """Whether `value` improves on `best` by more than `min_delta` for a metric that is better `mode`."""
    return best is None or (value < best - min_delta if mode == "min" else value > best + min_delta)


def rank_key(value: float | None, mode: str) -> tuple[bool, float]:
    """Sort key that puts the best value first and missing values last."""
    if value is None:
        return True, 0.0
    return False, value if mode == "min" else -value


# ------------------------------------------------------------------------------ from a confusion matrix


def per_class_recall(confusion: np.ndarray) -> np.ndarray:
    """Share of each true class predicted right (row-wise); NaN for a class without examples."""
    counts = confusion.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, np.diag(confusion) / counts, np.nan)


def per_class_precision(confusion: np.ndarray) -> np.ndarray:
    """Share of each predicted class that was right (column-wise); NaN for a class never predicted."""
    counts = confusion.sum(0)
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


def most_confused(confusion: np.ndarray, classes: list[str], count: int = 10) -> list[tuple[str, str, int]]:
    """The `count` largest off-diagonal cells as (true class, predicted class, images), largest first."""
    off = np.array(confusion, dtype=np.int64)
    np.fill_diagonal(off, 0)
    order = np.argsort(off, axis=None, kind="stable")[::-1][:count]
    pairs = [np.unravel_index(index, off.shape) for index in order]
    return [(classes[i], classes[j], int(off[i, j])) for i, j in pairs if off[i, j] > 0]
