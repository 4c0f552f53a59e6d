"""Image grids of a run (seeds 002, 003): predictions on evaluated images, and training inputs after augmentation.

    predictions.png     images of the evaluated split; above each, one line per task with the predicted class,
                        green when right, red when wrong (then with the true class in brackets)
    augmented.png       training images as stored, and the same images after `data.augment`, draw by draw

Images arrive as the shards and the model hold them: uint8 (N, C, H, W), numpy or torch, 1 or 3 channels.
`save_figure` writes any figure of a run folder as a PNG, to a local path or a URI.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, never a window (workers and servers have no display)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from cnnjobs import storage  # noqa: E402

RIGHT = "#1a7f37"  # dark enough to read as text on white
WRONG = "#cf222e"
MAX_IMAGES = 32  # more and every tile gets too small to read its labels
MAX_NAME = 22  # characters of a class name in a label; longer ones end in "…"
_FONT = 8  # points, the labels above the images
_CHAR_W = 0.6 * _FONT / 72  # inches per character, a generous average for DejaVu Sans
_LINE_H = 1.35 * _FONT / 72  # inches per label line
_WIDTH = 16.0  # inches a grid may take before it wraps to another row
_GAP = 0.15  # inches between tiles side by side
_ROW_GAP = 0.3  # inches between an image and the labels of the tile under it


@dataclass
class EvaluatedImages:
    """Evaluated images with each task's true and predicted class index, per image."""

    images: Any  # uint8 (N, C, H, W), numpy or torch
    truth: dict[str, list[int]]
    predicted: dict[str, list[int]]


@dataclass
class Augmented:
    """Training images as stored and the same images after the augmentation, one batch per draw."""

    originals: Any  # uint8 (N, C, H, W)
    draws: list[Any] = field(default_factory=list)  # each uint8 (N, C, H, W), e.g. one per epoch's generator


def prediction_grid(images: Any, truth: dict[str, Sequence[int]], predicted: dict[str, Sequence[int]],
                    classes: dict[str, list[str]], title: str) -> plt.Figure:
    """Up to MAX_IMAGES images, each labelled with one line per task, `task: predicted`, green when right and
    red when wrong, `task: predicted (true)`; the frame of an image is red when any of its tasks is wrong."""
    pixels = _pixels(images)[:MAX_IMAGES]
    tasks = list(truth)
    labels = [[_label(task, classes[task], int(truth[task][i]), int(predicted[task][i])) for task in tasks]
              for i in range(len(pixels))]
    widest = max((len(text) for tile in labels for text, _ in tile), default=0)
    # Long labels (seed 002's class names) make wide tiles: the images then grow with them, up to 2 in.
    side = min(2.0, max(1.4, 0.65 * widest * _CHAR_W))
    layout = _Layout(pixels.shape, len(pixels), label_w=widest * _CHAR_W, label_h=len(tasks) * _LINE_H, side=side)
    figure = layout.figure()
    wrong = 0
    for index, (image, tile) in enumerate(zip(pixels, labels)):
        axis = layout.axes(figure, index)
        show_image(axis, image)
        for line, (text, right) in enumerate(tile):
            # One text per task, so that each line has its own colour; stacked upwards from the image's top edge.
            above = 2 + _LINE_H * 72 * (len(tile) - 1 - line)  # points
            axis.annotate(text, (0.5, 1.0), xycoords="axes fraction", xytext=(0, above), textcoords="offset points",
                          ha="center", va="bottom", fontsize=_FONT, color=RIGHT if right else WRONG)
        all_right = all(right for _, right in tile)
        wrong += not all_right
        _frame(axis, RIGHT if all_right else WRONG)
    layout.title(figure, f"{title}\n{len(pixels) - wrong} of {len(pixels)} images right on every task; green: right, "
                         "red: wrong (true class in brackets)")
    return figure


def augmentation_grid(originals: Any, augmented: Any, title: str) -> plt.Figure:
    """A column per image: on top the image as stored, under it each augmented draw of it (`augmented` is one
    uint8 (N, C, H, W) batch or a sequence of them), so that what the pipeline does can be checked by eye."""
    first = _pixels(originals)[:MAX_IMAGES // 2]
    draws = [augmented] if getattr(augmented, "ndim", None) == 4 else list(augmented)
    rows = [first, *[_pixels(draw)[:len(first)] for draw in draws]]
    names = ["as stored"] + [f"augmented #{d + 1}" if len(draws) > 1 else "augmented" for d in range(len(draws))]
    layout = _Layout(first.shape, len(first), label_w=0.0, label_h=0.0, side=1.1, columns=len(first),
                     rows=len(rows), left=max(map(len, names)) * _CHAR_W + 0.2)
    figure = layout.figure()
    for row, (batch, name) in enumerate(zip(rows, names)):
        for col, image in enumerate(batch):
            axis = layout.axes(figure, row * len(first) + col)
            show_image(axis, image)
            _frame(axis, "0.6")
            if col == 0:
                axis.set_ylabel(name, fontsize=8, rotation=0, ha="right", va="center", labelpad=6)
    layout.title(figure, f"{title}\ntop row: images as stored; below: the same images after data.augment")
    return figure


def show_image(axis: plt.Axes, pixels: np.ndarray) -> None:
    """A uint8 (C, H, W) image on `axis`, pixel for pixel (grayscale for one channel), without ticks."""
    image = np.asarray(pixels).transpose(1, 2, 0)
    if image.shape[2] == 1:
        axis.imshow(image[:, :, 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    else:
        axis.imshow(image, interpolation="nearest")
    axis.set_xticks([])
    axis.set_yticks([])


def short_name(name: str, limit: int = MAX_NAME) -> str:
    """A class name cut to `limit` characters, ending in "…" when it was longer."""
    return name if len(name) <= limit else name[:limit - 1] + "…"


def save_figure(figure: plt.Figure, location: str) -> None:
    """Write `figure` as a PNG at `location` (a local path or a URI) and close it. The PNG is cropped to what is
    drawn, so that nothing is cut off where a layout misjudged a long label."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight", pad_inches=0.15)
    plt.close(figure)
    storage.write_bytes(location, buffer.getvalue())


@dataclass
class _Layout:
    """Tiles of equal size placed in inches (subplots with per-tile titles lay out slowly and unevenly): each tile
    is an image box with `label_h` inches of text above it, at least `label_w` inches wide."""

    shape: tuple[int, ...]  # (N, C, H, W) of the images
    count: int
    label_w: float
    label_h: float
    side: float  # inches of an image's longer side
    columns: int = 0  # 0: as many as fit in _WIDTH
    rows: int = 0
    left: float = 0.15  # inches left of the first column (row names)
    top: float = 0.75  # inches for the title

    def __post_init__(self) -> None:
        height, width = self.shape[2], self.shape[3]
        self.image_w = self.side * width / max(height, width)
        self.image_h = self.side * height / max(height, width)
        self.tile_w = max(self.image_w, self.label_w) + _GAP
        self.tile_h = self.image_h + self.label_h + (_ROW_GAP if self.label_h else _GAP)
        if not self.columns:
            self.columns = max(1, min(self.count, 8, int((_WIDTH - self.left) // self.tile_w)))
        self.rows = self.rows or math.ceil(self.count / self.columns)
        self.width = max(self.left + self.columns * self.tile_w + 0.15, 6.0)
        self.height = self.top + self.rows * self.tile_h + 0.1
        self.x0 = self.left + (self.width - self.left - 0.15 - self.columns * self.tile_w) / 2

    def figure(self) -> plt.Figure:
        return plt.figure(figsize=(self.width, self.height))

    def axes(self, figure: plt.Figure, index: int) -> plt.Axes:
        row, col = divmod(index, self.columns)
        x = self.x0 + col * self.tile_w + (self.tile_w - self.image_w) / 2
        y = self.height - self.top - row * self.tile_h - self.label_h - self.image_h
        return figure.add_axes((x / self.width, y / self.height, self.image_w / self.width,
                                self.image_h / self.height))

    def title(self, figure: plt.Figure, text: str) -> None:
        figure.suptitle(text, fontsize=10, y=1 - 0.08 / self.height, va="top")


def _pixels(images: Any) -> np.ndarray:
    pixels = np.asarray(images)  # a CPU torch tensor converts without a copy
    if pixels.ndim != 4 or pixels.shape[1] not in (1, 3):
        raise ValueError(f"expected uint8 images (N, C, H, W) with 1 or 3 channels, got shape {pixels.shape}")
    return pixels.astype(np.uint8, copy=False)


def _label(task: str, names: list[str], truth: int, predicted: int) -> tuple[str, bool]:
    right = truth == predicted
    text = f"{task}: {short_name(names[predicted])}"
    return (text if right else f"{text} ({short_name(names[truth])})"), right


def _frame(axis: plt.Axes, color: str) -> None:
    for spine in axis.spines.values():
        spine.set_color(color)
        spine.set_linewidth(2)
