"""Pictures of a run, saved into its folder when it ends (seeds 000 to 003).

    learning_curves.png     train vs validation loss and accuracy per epoch, titled "<job> / <run id>"; the best
                            (restored) and early-stop epochs marked; a second row with each task's accuracy when
                            the model has several outputs
    confusion_<task>.png    the confusion matrix of the evaluated split (test, else validation), rows normalized,
                            with the task's most confused pairs (true -> predicted) in a table beside it
    predictions.png         evaluated images with predicted vs true labels (`grids.prediction_grid`)
    augmented.png           training inputs before and after augmentation (`grids.augmentation_grid`)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, never a window (workers and servers have no display)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import PowerNorm  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from cnnjobs import storage  # noqa: E402
from cnnjobs.metrics import Metric, most_confused  # noqa: E402
from cnnjobs.results.grids import (  # noqa: E402
    Augmented,
    EvaluatedImages,
    augmentation_grid,
    prediction_grid,
    save_figure,
    short_name,
)
from cnnjobs.run import layout  # noqa: E402
from cnnjobs.run.summary import TrainSummary  # noqa: E402

# Up to FULL_LIMIT classes the matrix shows every class, its names at >= 7 pt on cells of >= 0.16 in: 60 classes
# make a 10 in matrix (a ~1,300 px PNG) that still reads on a screen. 143 classes (seed 002's articleType) would
# need 23 in of mostly empty cells; what a reader looks for there is the confusions, so above the limit the matrix
# keeps the SHOWN classes involved in the largest off-diagonal cells, and its title says so.
FULL_LIMIT = 60
SHOWN = 40
COUNTS_LIMIT = 15  # counts are written in the cells up to this many classes (beyond, they no longer fit)


@dataclass(frozen=True)
class ConfusedPair:
    """One off-diagonal cell: `images` of class `true` predicted as `predicted`, `share` of the true class's."""

    true: str
    predicted: str
    images: int
    share: float


def save_plots(location: str, summary: TrainSummary, rows: list[dict[str, Any]],
               predictions: EvaluatedImages | None = None, augmented: Augmented | None = None) -> list[str]:
    """Draw the run's pictures into its folder `location`: learning curves, a confusion matrix per task, and,
    when given, the prediction grid of evaluated images and the augmentation grid; returns the files written."""
    title = f"{summary.job} / {summary.run_id}"
    split = summary.evaluated or "test"
    classes = summary.data.classes if summary.data else {}
    written = [layout.CURVES]
    save_figure(learning_curves(rows, summary.best_epoch, summary.stopped_early, title),
                storage.join(location, layout.CURVES))
    for task, matrix in summary.confusion.items():
        written.append(layout.confusion_png(task))
        save_figure(confusion_figure(task, np.asarray(matrix), classes.get(task), split),
                    storage.join(location, written[-1]))
    if predictions is not None:
        written.append(layout.PREDICTIONS)
        figure = prediction_grid(predictions.images, predictions.truth, predictions.predicted, classes,
                                 f"{title}: {split} images, predicted class per task")
        save_figure(figure, storage.join(location, written[-1]))
    if augmented is not None:
        written.append(layout.AUGMENTED)
        save_figure(augmentation_grid(augmented.originals, augmented.draws, f"{title}: training inputs"),
                    storage.join(location, written[-1]))
    return written


def learning_curves(rows: list[dict[str, Any]], best_epoch: int | None, stopped_early: bool = False,
                    title: str = "") -> plt.Figure:
    """Loss and accuracy, train vs validation, by epoch; a line marks the best (restored) epoch. With several
    tasks, a second row shows each task's accuracy."""
    tasks = _tasks(rows)
    several = len(tasks) > 1
    columns = 2 * len(tasks) if several else 2  # the top axes span half the columns, each task's axes two
    figure = plt.figure(figsize=(max(11, 3.7 * len(tasks)), 8 if several else 4.4), layout="constrained")
    grid = figure.add_gridspec(2 if several else 1, columns)
    half = columns // 2
    for position, metric in enumerate(("loss", "acc")):
        axis = figure.add_subplot(grid[0, position * half:(position + 1) * half])
        _curves(axis, rows, metric, metric)
        _mark_epochs(axis, rows, best_epoch, stopped_early, labelled=True)
        axis.set_title("mean over tasks" if several and metric == "acc" else
                       "weighted sum over tasks" if several else "", fontsize=9)
    if several:
        for position, task in enumerate(tasks):
            axis = figure.add_subplot(grid[1, 2 * position:2 * position + 2])
            _curves(axis, rows, f"{task}/acc", "acc")
            _mark_epochs(axis, rows, best_epoch, stopped_early, labelled=False)
            axis.set_title(f"task {task}: accuracy", fontsize=10)
    if title:
        figure.suptitle(title, fontsize=12)
    return figure


def confusion_figure(task: str, matrix: np.ndarray, classes: list[str] | None = None,
                     split: str = "test") -> plt.Figure:
    """The row-normalized confusion matrix (rows: true class, columns: predicted; counts written when the matrix
    is small), and beside it the table of the most confused pairs. Above FULL_LIMIT classes, only the SHOWN
    most confused classes are drawn, their shares still of each true class's images."""
    matrix = np.asarray(matrix, dtype=np.int64)
    n = len(matrix)
    names = list(classes) if classes and len(classes) == n else [str(i) for i in range(n)]
    shares = _row_shares(matrix)
    shown = np.arange(n) if n <= FULL_LIMIT else most_confused_classes(matrix, names, SHOWN)
    k = len(shown)
    labels = [short_name(names[i], 24) for i in shown]
    font = 10 if k <= COUNTS_LIMIT else 8 if k <= 30 else 7
    cell = max(0.16, min(0.6, 6 / k))
    side = max(3.6, k * cell)
    upright = k <= 10 and max(map(len, labels)) <= 6
    margin = max(map(len, labels)) * 0.6 * font / 72 + 0.6  # inches for the names and the axis label
    pairs = confused_pairs(matrix, names, 10 if n <= COUNTS_LIMIT else 15)
    table_w = 4.8
    figure = plt.figure(figsize=(side + margin + 1.2 + table_w, side + (0.6 if upright else margin) + 1.1),
                        layout="constrained")
    grid = figure.add_gridspec(1, 2, width_ratios=(side + margin + 1.2, table_w))
    axis = figure.add_subplot(grid[0, 0])
    # A square-root scale: with a good model the diagonal is near 1 and the errors a few percent, which a linear
    # scale paints almost white.
    image = axis.imshow(shares[np.ix_(shown, shown)], cmap="Blues", norm=PowerNorm(0.5, vmin=0, vmax=1),
                        interpolation="nearest")
    bar = figure.colorbar(image, ax=axis, fraction=0.046, pad=0.02, ticks=[0, 0.01, 0.05, 0.1, 0.25, 0.5, 1])
    bar.set_label("share of the true class's images (square-root scale)", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    axis.set_xticks(range(k), labels, rotation=0 if upright else 90, fontsize=font)
    axis.set_yticks(range(k), labels, fontsize=font)
    axis.tick_params(length=2, pad=2)
    if k <= COUNTS_LIMIT:
        for i, row in enumerate(shown):
            for j, col in enumerate(shown):
                if matrix[row, col]:
                    axis.text(j, i, str(matrix[row, col]), ha="center", va="center", fontsize=8,
                              color="white" if shares[row, col] > 0.5 else "black")
    axis.set_xlabel("predicted", fontsize=9)
    axis.set_ylabel("true", fontsize=9)
    if k == n:
        what = f"{task}: {split} confusion, all {n} classes, {int(matrix.sum())} images"
        rows_note = "rows normalized: each true class's row sums to 1"
    else:
        what = f"{task}: {split} confusion, the {k} most confused of {n} classes"
        rows_note = f"rows normalized over all {n} classes (the {n - k} not drawn included)"
    axis.set_title(f"{what}\n{rows_note}", fontsize=10)
    _pairs_table(figure.add_subplot(grid[0, 1]), pairs, split, figure.get_figheight())
    return figure


def confused_pairs(matrix: np.ndarray, classes: list[str], count: int = 10) -> list[ConfusedPair]:
    """The `count` largest off-diagonal cells, largest first, each with its share of the true class's images."""
    totals = dict(zip(classes, np.asarray(matrix).sum(1).tolist()))
    return [ConfusedPair(true, predicted, images, images / totals[true])
            for true, predicted, images in most_confused(np.asarray(matrix), classes, count)]


def most_confused_classes(matrix: np.ndarray, classes: list[str], count: int) -> np.ndarray:
    """Indices (ascending) of `count` classes: both ends of the largest off-diagonal cells first, then the
    classes with the most errors as truth or prediction."""
    chosen: dict[int, None] = {}
    index = {name: i for i, name in enumerate(classes)}
    for true, predicted, _ in most_confused(matrix, classes, len(classes) ** 2):
        for name in (true, predicted):
            if len(chosen) < count:
                chosen.setdefault(index[name])
    off = np.array(matrix, dtype=np.int64)
    np.fill_diagonal(off, 0)
    for i in np.argsort(-(off.sum(0) + off.sum(1)), kind="stable"):
        if len(chosen) < count:
            chosen.setdefault(int(i))
    return np.sort(np.fromiter(chosen, dtype=np.int64))


def _pairs_table(axis: plt.Axes, pairs: list[ConfusedPair], split: str, inches: float) -> None:
    """The pairs as a table at the top of `axis` (about `inches` high), rows of 0.24 in."""
    axis.axis("off")
    axis.set_title(f"most confused pairs ({split})", fontsize=10, loc="left")
    if not pairs:
        axis.text(0, 1, "none: every image was predicted right", va="top", fontsize=9, transform=axis.transAxes)
        return
    cells = [[short_name(p.true), short_name(p.predicted), str(p.images), f"{p.share:.1%}"] for p in pairs]
    height = min(0.24 * (len(cells) + 1) / max(inches - 1.0, 1.0), 1.0)
    table = axis.table(cells, colLabels=["true", "predicted as", "images", "of true"], cellLoc="left",
                       colLoc="left", colWidths=[0.35, 0.35, 0.14, 0.16], bbox=(0, 1 - height, 1, height))
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    for (row, col), cell in table.get_celld().items():
        cell.set_edgecolor("0.85")
        if row == 0:
            cell.set_text_props(fontweight="bold")
        if col >= 2:
            cell.get_text().set_horizontalalignment("right")
            cell.PAD = 0.05


def _curves(axis: plt.Axes, rows: list[dict[str, Any]], metric: str, label: str) -> None:
    for split, style in (("train", "-o"), ("val", "-s")):
        points = [(float(r["epoch"]), float(r[f"{split}/{metric}"])) for r in rows
                  if r.get(f"{split}/{metric}") not in (None, "")]
        if points:
            axis.plot(*zip(*points), style, markersize=3, label=f"{split} {label}")
    axis.set_xlabel("epoch")
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_ylabel(label)
    axis.grid(alpha=0.3)


def _mark_epochs(axis: plt.Axes, rows: list[dict[str, Any]], best_epoch: int | None, stopped_early: bool,
                 labelled: bool) -> None:
    """The best (restored) epoch, and where early stopping ended the run; the legend on the top row only."""
    if best_epoch:
        label = f"best epoch {best_epoch}" + (" (early stop restored it)" if stopped_early else "")
        axis.axvline(best_epoch, color="tab:green", linestyle="--", label=label if labelled else None)
    if stopped_early and rows:
        axis.axvline(float(rows[-1]["epoch"]), color="tab:red", linestyle=":",
                     label=f"stopped at epoch {rows[-1]['epoch']}" if labelled else None)
    if axis.get_legend_handles_labels()[0]:
        axis.legend(fontsize=8)


def _tasks(rows: list[dict[str, Any]]) -> list[str]:
    """The tasks with a per-task accuracy in the rows, in first-seen order."""
    tasks: dict[str, None] = {}
    for row in rows:
        for key in row:
            try:
                metric = Metric.parse(key)
            except ValueError:
                continue
            if metric.task and metric.kind == "acc":
                tasks.setdefault(metric.task)
    return list(tasks)


def _row_shares(matrix: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.nan_to_num(matrix / matrix.sum(1, keepdims=True))
