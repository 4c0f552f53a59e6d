"""The run's pictures: learning curves, confusion matrices with their most confused pairs, and the image grids
(predictions green/red, augmentation). Every PNG must decode and show something (its pixels vary)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from matplotlib.colors import to_rgba
from PIL import Image, ImageDraw

from cnnjobs.results.grids import (
    RIGHT,
    WRONG,
    Augmented,
    EvaluatedImages,
    augmentation_grid,
    prediction_grid,
    save_figure,
    short_name,
)
from cnnjobs.results.plots import (
    FULL_LIMIT,
    SHOWN,
    ConfusedPair,
    confused_pairs,
    confusion_figure,
    learning_curves,
    most_confused_classes,
    save_plots,
)
from cnnjobs.run import layout
from cnnjobs.run.summary import DataFacts, TrainSummary

NAMES = ["Perfume and Body Mist", "Tshirts", "Casual Shoes", "Navy Blue", "Lip Gloss", "Ties and Cufflinks"]


def assert_picture(path, min_width: int = 300) -> np.ndarray:
    """A PNG that decodes, is at least `min_width` wide and is not blank."""
    with Image.open(path) as image:
        image.verify()
    pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)
    assert pixels.shape[1] >= min_width, pixels.shape
    assert pixels.std() > 10, f"{path} looks blank (pixel std {pixels.std():.1f})"
    return pixels


def confusion(n: int, seed: int = 0) -> np.ndarray:
    """A plausible matrix: imbalanced classes, ~80% right, errors mostly onto a few neighbours."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n, n), np.int64)
    for i, count in enumerate(np.maximum(2, (2000 / (np.arange(n) + 1)).astype(int))):
        out[i, i] = rng.binomial(count, 0.8)
        np.add.at(out[i], rng.choice(n, count - out[i, i]), 1)
    return out


def rows_of(epochs: int, tasks: tuple[str, ...] = ()) -> list[dict]:
    rows = []
    for e in range(1, epochs + 1):
        row = {"epoch": e, "train/loss": 1 / e, "train/acc": 0.5 + e / 20, "val/loss": 1.2 / e, "val/acc": 0.4 + e / 25}
        for t, task in enumerate(tasks):
            row |= {f"train/{task}/acc": 0.3 + e / 20 + t / 10, f"val/{task}/acc": 0.2 + e / 25 + t / 10}
        rows.append(row)
    return rows


def shapes(count: int) -> np.ndarray:
    """uint8 (N, 3, 80, 60) pictures of coloured shapes, as seed 002's 60x80 product photos are stored."""
    out = []
    for i in range(count):
        image = Image.new("RGB", (60, 80), "white")
        draw = ImageDraw.Draw(image)
        colour = (40 * i % 255, 90, 200 - 5 * i)
        [draw.rectangle, draw.ellipse][i % 2]((8, 12, 52, 68), fill=colour)
        out.append(np.asarray(image).transpose(2, 0, 1))
    return np.stack(out)


def test_save_plots_writes_every_picture_and_the_legend_names_the_epochs(tmp_path):
    rows = rows_of(5)
    rows[1] = {k: v for k, v in rows[1].items() if not k.startswith("val/")}  # an epoch without validation
    summary = TrainSummary(job="job", run_id="run", run_dir=str(tmp_path), started="now", monitor="val/acc",
                           mode="max", epochs=5, best_epoch=4, stopped_early=True, evaluated="test",
                           data=DataFacts(shards="x", classes={"digit": ["a", "b", "c"]}),
                           confusion={"digit": [[5, 1, 0], [0, 6, 0], [2, 0, 4]], "big": confusion(70).tolist()})
    images = shapes(6)
    predictions = EvaluatedImages(images, {"digit": [0, 1, 2, 0, 1, 2]}, {"digit": [0, 1, 1, 0, 2, 2]})
    written = save_plots(str(tmp_path), summary, rows, predictions, Augmented(images, [255 - images]))
    assert written == [layout.CURVES, layout.confusion_png("digit"), layout.confusion_png("big"), layout.PREDICTIONS,
                       layout.AUGMENTED]
    for name in written:
        assert_picture(tmp_path / name)
    figure = learning_curves(rows, 4, stopped_early=True, title="job / run")
    axes = figure.axes
    legend = [text.get_text() for text in axes[0].get_legend().get_texts()]
    assert "best epoch 4 (early stop restored it)" in legend and "stopped at epoch 5" in legend
    assert len(axes[0].lines[1].get_xdata()) == 4, "val loss drawn only for validated epochs"
    assert figure.get_suptitle() == "job / run"
    assert len(axes) == 2, "one task: no per-task row"


def test_learning_curves_add_a_row_of_accuracy_per_task(tmp_path):
    figure = learning_curves(rows_of(6, ("gender", "articleType", "baseColour")), 5, title="fashion / r1")
    assert [axis.get_title() for axis in figure.axes[2:]] == [
        "task gender: accuracy", "task articleType: accuracy", "task baseColour: accuracy"]
    assert [line.get_label() for line in figure.axes[2].lines[:2]] == ["train acc", "val acc"]
    save_figure(figure, str(tmp_path / "curves.png"))
    assert_picture(tmp_path / "curves.png")


@pytest.mark.parametrize("n", [3, 10, 47, 143])
def test_confusion_figures_stay_readable_from_3_to_143_classes(tmp_path, n):
    names = [f"{NAMES[i % len(NAMES)]} {i}" for i in range(n)]
    figure = confusion_figure("task", confusion(n), names, "val")
    matrix_axis = figure.axes[0]
    shown = len(matrix_axis.get_xticklabels())
    assert shown == (n if n <= FULL_LIMIT else SHOWN)
    title = matrix_axis.get_title()
    assert (f"the {SHOWN} most confused of {n} classes" in title) == (n > FULL_LIMIT)
    assert bool(matrix_axis.texts) == (n <= 15), "counts in the cells only when they fit"
    assert min(label.get_fontsize() for label in matrix_axis.get_yticklabels()) >= 7
    figure.canvas.draw()
    boxes = [label.get_window_extent() for label in matrix_axis.get_yticklabels()]
    assert all(a.y0 >= b.y1 - 0.5 or b.y0 >= a.y1 - 0.5 for a, b in itertools.pairwise(boxes)), "names overlap"
    save_figure(figure, str(tmp_path / f"confusion_{n}.png"))
    assert_picture(tmp_path / f"confusion_{n}.png", min_width=600)


def test_most_confused_pairs_of_a_small_known_matrix():
    matrix = np.array([[8, 2, 0],  # a: 2 of its 10 images taken for b
                       [0, 5, 0],
                       [3, 1, 6]])  # c: 3 of 10 for a, 1 for b
    assert confused_pairs(matrix, ["a", "b", "c"]) == [
        ConfusedPair("c", "a", 3, 0.3), ConfusedPair("a", "b", 2, 0.2), ConfusedPair("c", "b", 1, 0.1)]
    assert confused_pairs(matrix, ["a", "b", "c"], count=1) == [ConfusedPair("c", "a", 3, 0.3)]
    assert confused_pairs(np.diag([3, 4]), ["a", "b"]) == []
    table = confusion_figure("t", matrix, ["a", "b", "c"]).axes[-1].tables[0]
    cells = {(row, col): cell.get_text().get_text() for (row, col), cell in table.get_celld().items()}
    assert [cells[(1, col)] for col in range(4)] == ["c", "a", "3", "30.0%"]
    assert cells[(0, 0)] == "true" and max(row for row, _ in cells) == 3


def test_most_confused_classes_keep_both_ends_of_the_largest_errors():
    matrix = np.diag([50] * 8)
    matrix[6, 2], matrix[1, 7], matrix[3, 4] = 9, 5, 1
    assert most_confused_classes(matrix, [str(i) for i in range(8)], 4).tolist() == [1, 2, 6, 7]
    assert most_confused_classes(matrix, [str(i) for i in range(8)], 6).tolist() == [1, 2, 3, 4, 6, 7]


def test_prediction_grid_colours_each_task_green_when_right_and_red_when_wrong(tmp_path):
    images = torch.from_numpy(shapes(12))
    classes = {"gender": ["Men", "Women", "Unisex"], "articleType": NAMES, "baseColour": ["Navy Blue", "Red"]}
    truth = {"gender": [i % 3 for i in range(12)], "articleType": [i % 6 for i in range(12)],
             "baseColour": [i % 2 for i in range(12)]}
    predicted = {"gender": truth["gender"][:], "articleType": [(v + (i % 4 == 0)) % 6 for i, v in
                                                                enumerate(truth["articleType"])],
                 "baseColour": [1 - v if i in (1, 4) else v for i, v in enumerate(truth["baseColour"])]}
    figure = prediction_grid(images, truth, predicted, classes, "fashion / r1: val images")
    texts = [text for axis in figure.axes for text in axis.texts]
    assert len(texts) == 12 * 3, "one line per task and image"
    red = [t for t in texts if to_rgba(t.get_color()) == to_rgba(WRONG)]
    green = [t for t in texts if to_rgba(t.get_color()) == to_rgba(RIGHT)]
    wrong = sum(p != t for task in truth for p, t in zip(predicted[task], truth[task]))
    assert len(red) == wrong == 5 and len(green) == 36 - wrong
    first = [t.get_text() for t in figure.axes[0].texts]
    assert first == ["gender: Men", "articleType: Tshirts (Perfume and Body Mist)", "baseColour: Navy Blue"]
    assert short_name("Face Serum and Gel for Men") == "Face Serum and Gel fo…"
    assert all("(" in t.get_text() for t in red) and not any("(" in t.get_text() for t in green)
    save_figure(figure, str(tmp_path / "predictions.png"))
    assert_picture(tmp_path / "predictions.png")


def test_prediction_grid_of_grayscale_digits_and_augmentation_grid(tmp_path):
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = torch.nn.functional.interpolate(torch.tensor(digits.images[:40] * 16.0).unsqueeze(1), size=(28, 28),
                                             mode="bilinear").clamp(0, 255).to(torch.uint8)
    truth = digits.target[:40].tolist()
    predicted = [(t + 1) % 10 if i % 5 == 0 else t for i, t in enumerate(truth)]
    figure = prediction_grid(pixels, {"digit": truth}, {"digit": predicted}, {"digit": list("0123456789")}, "d")
    assert len(figure.axes) == 32, "at most 32 images"
    assert sum(to_rgba(t.get_color()) == to_rgba(WRONG) for axis in figure.axes for t in axis.texts) == 7
    save_figure(figure, str(tmp_path / "digits.png"))
    assert_picture(tmp_path / "digits.png")
    from cnnjobs.data.augment import make_augment
    from cnnjobs.spec import AugmentSpec

    augment = make_augment(AugmentSpec(rotation=15, shift=0.1))
    draws = [augment(pixels[:8], seed) for seed in range(2)]
    grid = augmentation_grid(pixels[:8], draws, "digits / r1")
    assert len(grid.axes) == 8 * 3
    assert [axis.get_ylabel() for axis in grid.axes[::8]] == ["as stored", "augmented #1", "augmented #2"]
    save_figure(grid, str(tmp_path / "augmented.png"))
    assert_picture(tmp_path / "augmented.png")


def test_grids_refuse_images_that_are_not_n_c_h_w():
    with pytest.raises(ValueError, match="N, C, H, W"):
        prediction_grid(np.zeros((2, 28, 28), np.uint8), {"d": [0, 1]}, {"d": [0, 1]}, {"d": ["0", "1"]}, "t")
