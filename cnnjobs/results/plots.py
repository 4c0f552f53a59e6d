"""Pictures of a run, saved into its folder: learning curves (seed 000, 003) and confusion matrices (001, 002).

    learning_curves.png     train vs validation loss and accuracy per epoch; best (and early-stop) epoch marked
    confusion_<task>.png    the confusion matrix of the evaluated split (test, else validation), rows normalized
"""

from __future__ import annotations

import io
import posixpath
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, never a window (workers and servers have no display)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from cnnjobs import storage  # noqa: E402
from cnnjobs.results import files  # noqa: E402
from cnnjobs.results.summary import TrainSummary  # noqa: E402

_LABELLED_CLASSES = 30  # beyond this many classes a confusion matrix shows no class names


def save_plots(location: str, summary: TrainSummary, rows: list[dict[str, Any]]) -> list[str]:
    """Draw the learning curves and one confusion matrix per task into the run folder `location`; returns the
    files written."""
    written = [files.CURVES]
    _save(learning_curves(rows, summary.best_epoch, summary.stopped_early), storage.join(location, files.CURVES))
    classes = summary.data.classes if summary.data else {}
    for task, matrix in summary.confusion.items():
        name = files.confusion_png(task)
        _save(confusion_figure(task, np.asarray(matrix), classes.get(task), summary.evaluated or "test"),
              storage.join(location, name))
        written.append(name)
    return written


def learning_curves(rows: list[dict[str, Any]], best_epoch: int | None, stopped_early: bool = False) -> plt.Figure:
    """Loss and accuracy, train vs validation, by epoch; a line marks the best (restored) epoch."""
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for axis, metric in zip(axes, ("loss", "acc")):
        for split, style in (("train", "-o"), ("val", "-s")):
            points = [(float(r["epoch"]), float(r[f"{split}/{metric}"])) for r in rows
                      if r.get(f"{split}/{metric}") not in (None, "")]
            if points:
                axis.plot(*zip(*points), style, markersize=3, label=f"{split} {metric}")
        if best_epoch:
            label = f"best epoch {best_epoch}" + (" (early stop restored it)" if stopped_early else "")
            axis.axvline(best_epoch, color="tab:green", linestyle="--", label=label)
        if stopped_early:
            axis.axvline(float(rows[-1]["epoch"]), color="tab:red", linestyle=":",
                         label=f"stopped at epoch {rows[-1]['epoch']}")
        axis.set_xlabel("epoch")
        axis.set_ylabel(metric)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    return figure


def confusion_figure(task: str, matrix: np.ndarray, classes: list[str] | None = None,
                     split: str = "test") -> plt.Figure:
    """A row-normalized confusion matrix (rows: true class, columns: predicted), counts written when small."""
    n = len(matrix)
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = np.nan_to_num(matrix / matrix.sum(1, keepdims=True))
    size = min(4 + 0.4 * n, 16)
    figure, axis = plt.subplots(figsize=(size, size))
    image = axis.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=axis, fraction=0.046)
    if n <= _LABELLED_CLASSES:
        names = classes or [str(i) for i in range(n)]
        axis.set_xticks(range(n), names, rotation=90 if n > 10 else 0)
        axis.set_yticks(range(n), names)
        if n <= 15:
            for i in range(n):
                for j in range(n):
                    if matrix[i, j]:
                        axis.text(j, i, int(matrix[i, j]), ha="center", va="center",
                                  color="white" if shares[i, j] > 0.5 else "black", fontsize=8)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title(f"{task}: {split} confusion (rows sum to 1)")
    figure.tight_layout()
    return figure


def _save(figure: plt.Figure, location: str) -> None:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    fs, path = storage.resolve(location)
    fs.create_dir(posixpath.dirname(path), recursive=True)
    with fs.open_output_stream(path) as out:
        out.write(buffer.getvalue())
