"""What a trained network sees in one image (seed 000): the feature maps of every convolution and pooling layer,
the prediction of every task and, on request, a Grad-CAM heat map per task (computed by captum).

Written into `<run folder>/visualize/<image stem>/` unless told otherwise:

    features_NN_<layer>.png   one grid per Conv2d / pooling layer, in the order they run; one panel per channel
    prediction.png            the image as the model sees it, with each task's top 3 classes
    gradcam_<task>.png        with `cam`: where the last convolution looked for the predicted class of the task
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, never a window (servers have no display)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from cnnjobs import storage  # noqa: E402
from cnnjobs.data.decode import BadImage  # noqa: E402
from cnnjobs.errors import JobError  # noqa: E402
from cnnjobs.results.grids import save_figure, show_image  # noqa: E402
from cnnjobs.results.trained import TrainedModel, load_trained  # noqa: E402
from cnnjobs.run import layout  # noqa: E402

MAX_PANELS = 64  # channels drawn per layer: beyond that the panels get too small to read
TOP_CLASSES = 3
_GAP, _LABEL, _TITLE = 0.08, 0.2, 0.6  # inches: between panels, above each panel for its channel, for the title
# What counts as a feature-map layer: convolutions and every 2-D pooling (adaptive ones end torchvision nets).
MAP_LAYERS = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveMaxPool2d, nn.AdaptiveAvgPool2d, nn.LPPool2d)


@dataclass(frozen=True)
class LayerMaps:
    """One layer's feature-map grid."""

    name: str  # dotted module name, e.g. backbone.0.3
    kind: str  # module type, e.g. Conv2d
    output_shape: tuple[int, int, int]  # channels, height, width for the one image
    shown: int  # channels drawn (at most MAX_PANELS)
    file: str


@dataclass(frozen=True)
class TaskPrediction:
    """One task's answer: the predicted class and the top classes with their probabilities, most likely first."""

    task: str
    index: int
    predicted: str
    probability: float
    top: list[tuple[str, float]]


@dataclass(frozen=True)
class GradCam:
    """A Grad-CAM heat map for the predicted class of one task."""

    task: str
    index: int
    predicted: str
    probability: float
    layer: str  # the convolution it was computed on
    file: str
    heat: np.ndarray = field(repr=False, compare=False)  # (H, W) at the input size, >= 0, what the PNG draws


@dataclass(frozen=True)
class Visualized:
    """Everything `visualize` wrote and found for one image."""

    run: str
    job: str
    image: str
    out: str
    layers: list[LayerMaps]
    prediction: list[TaskPrediction]
    prediction_png: str
    cams: list[GradCam]

    @property
    def files(self) -> list[str]:
        """Every PNG written, in the order they were drawn."""
        return [layer.file for layer in self.layers] + [self.prediction_png] + [cam.file for cam in self.cams]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the heat-map arrays left out: they are in the PNGs)."""
        payload = asdict(self)
        for cam in payload["cams"]:
            del cam["heat"]
        return payload


def visualize(ref: str, image: str, out: str | None = None, cam: bool = False, root: str = "runs") -> Visualized:
    """Draw the feature maps of every conv and pooling layer of run `ref`'s model for `image`, its prediction and
    (with `cam`) one Grad-CAM heat map per task; `out` defaults to `<run folder>/visualize/<image stem>/`."""
    trained = load_trained(ref, root)
    try:
        pixels = trained.pixels(image)
    except BadImage as exc:
        raise JobError(f"{image}: cannot read the image ({exc})") from None
    batch = torch.tensor(pixels).unsqueeze(0)  # a copy: PIL's array is read-only, torch warns about those
    out = out or storage.join(trained.run.path, layout.VISUALIZE_DIR, Path(image).stem)
    job = trained.job.name

    activations, probabilities = _feature_maps(trained, batch)
    # Grad-CAM looks at the backbone's last convolution: its maps still have a layout, and the most meaning.
    convs = [name for name, kind, _ in activations if kind == "Conv2d" and name.startswith("backbone.")]
    if cam and not convs:  # said before anything is written
        raise JobError(f"{trained.run.path}: {trained.job.model.arch} has no convolution for Grad-CAM")
    layers = []
    for index, (name, kind, maps) in enumerate(activations, 1):
        location = storage.join(out, layout.feature_maps_png(index, name))
        title = f"{job}: {name} ({kind}), layer {index} of {len(activations)}"
        save_figure(feature_grid(maps, title), location)
        layers.append(LayerMaps(name, kind, tuple(maps.shape), min(len(maps), MAX_PANELS), location))

    classes = trained.preprocessing.classes
    prediction = [_top(task, probabilities[task][0], classes[task]) for task in probabilities]
    prediction_png = storage.join(out, layout.PREDICTION_PNG)
    save_figure(prediction_figure(pixels, prediction, f"{job}: {Path(image).name}"), prediction_png)

    cams = []
    if cam:
        for guess in prediction:
            heat = grad_cam(trained, batch, convs[-1], guess.task, guess.index)
            location = storage.join(out, layout.gradcam_png(guess.task))
            title = f"{job}: {guess.task} = {guess.predicted} ({guess.probability:.1%})\nGrad-CAM on {convs[-1]}"
            save_figure(cam_figure(pixels, heat, title), location)
            cams.append(GradCam(guess.task, guess.index, guess.predicted, guess.probability, convs[-1], location,
                                heat))
    return Visualized(trained.run.path, job, image, out, layers, prediction, prediction_png, cams)


def grad_cam(trained: TrainedModel, batch: torch.Tensor, layer: str, task: str, target: int) -> np.ndarray:
    """captum's LayerGradCam of class `target` of `task` on the module named `layer`, upsampled to the input size:
    an (H, W) array, zero where the layer's evidence speaks against the class."""
    from captum.attr import LayerAttribution, LayerGradCam  # imported here: only `--cam` needs captum

    def class_logits(inputs: torch.Tensor) -> torch.Tensor:
        logits = trained.model(inputs)[task]
        # A sigmoid head has one logit z for class 1; -z is class 0's (as in heads.class_scores), so `target` is a
        # class index either way.
        return torch.cat([-logits, logits], dim=1) if logits.shape[1] == 1 else logits

    module = trained.model.get_submodule(layer)
    attribution = LayerGradCam(class_logits, module).attribute(trained.inputs(batch), target=target,
                                                                relu_attributions=True)
    upsampled = LayerAttribution.interpolate(attribution, trained.preprocessing.image_size, "bilinear")
    return upsampled[0, 0].detach().cpu().numpy()


def _feature_maps(trained: TrainedModel, batch: torch.Tensor
                  ) -> tuple[list[tuple[str, str, np.ndarray]], dict[str, torch.Tensor]]:
    """One forward pass of `TrainedModel.probabilities` with hooks: (name, type, (C, H, W) output) of every
    conv/pool layer in the order they ran, and the probabilities that pass computed."""
    seen: dict[str, tuple[str, str, np.ndarray]] = {}

    def hook(name: str):
        def record(module: nn.Module, _inputs: Any, output: Any) -> None:
            # A module called twice is drawn once; clone because a following ReLU(inplace=True) would overwrite it.
            if name not in seen and isinstance(output, torch.Tensor) and output.dim() == 4:
                seen[name] = (name, type(module).__name__, output[0].detach().float().cpu().clone().numpy())
        return record

    handles = [module.register_forward_hook(hook(name)) for name, module in trained.model.named_modules()
               if isinstance(module, MAP_LAYERS)]
    try:
        probabilities = trained.probabilities(batch)
    finally:
        for handle in handles:
            handle.remove()
    return list(seen.values()), probabilities


def _top(task: str, probabilities: torch.Tensor, classes: list[str]) -> TaskPrediction:
    values, indices = probabilities.topk(min(TOP_CLASSES, len(classes)))
    top = [(classes[i], float(v)) for v, i in zip(values.tolist(), indices.tolist())]
    return TaskPrediction(task, int(indices[0]), top[0][0], top[0][1], top)


def feature_grid(maps: np.ndarray, title: str) -> plt.Figure:
    """A (C, H, W) activation as a grid of one panel per channel (the first MAX_PANELS), each on its own scale."""
    channels, height, width = maps.shape
    shown = min(channels, MAX_PANELS)
    # Enough columns that the grid is roughly as wide as it is high, whatever the maps' aspect ratio.
    cols = max(1, min(shown, math.ceil(math.sqrt(shown * height / width))))
    rows = math.ceil(shown / cols)
    # One axes in inch coordinates with an image per channel: a grid of 64 axes takes seconds to lay out and save.
    tile_w = min(11 / cols, 2.0 * math.sqrt(max(1.0, width / height)))  # wide maps get wide tiles, not thin ones
    tile_h = tile_w * height / width
    grid_w, grid_h = cols * (tile_w + _GAP) - _GAP, rows * (tile_h + _LABEL)
    fig_w, fig_h = max(7.0, grid_w + 0.4), grid_h + _TITLE + 0.2
    figure = plt.figure(figsize=(fig_w, fig_h))
    axis = figure.add_axes(((fig_w - grid_w) / 2 / fig_w, 0.1 / fig_h, grid_w / fig_w, grid_h / fig_h))
    # A 1x1 map (global pooling) is one number per channel: those only mean something on one shared scale.
    pooled = height * width == 1
    low, high = float(maps[:shown].min()), float(maps[:shown].max())
    for channel in range(shown):
        row, col = divmod(channel, cols)
        x, y = col * (tile_w + _GAP), row * (tile_h + _LABEL) + _LABEL
        axis.imshow(maps[channel], cmap="viridis", interpolation="nearest", aspect="auto",
                    extent=(x, x + tile_w, y + tile_h, y), **({"vmin": low, "vmax": high} if pooled else {}))
        flat = float(maps[channel].min()) == float(maps[channel].max())
        # A constant channel (a dead ReLU) fills its panel with one colour: say so rather than let it look like an
        # activation.
        label = f"{channel}: {float(maps[channel].flat[0]):.2g}" if pooled else \
            f"{channel}: all {float(maps[channel].min()):.2g}" if flat else str(channel)
        axis.text(x + tile_w / 2, y - 0.03, label, ha="center", va="bottom", fontsize=7)
    axis.set_xlim(0, grid_w)
    axis.set_ylim(grid_h, 0)
    axis.axis("off")
    count = f"{channels} channel{'s' if channels > 1 else ''}" if shown == channels else \
        f"first {shown} of {channels} channels"
    scale = f"one color scale, {low:.3g} to {high:.3g}" if pooled else "each panel on its own color scale"
    figure.suptitle(f"{title}\noutput {channels}x{height}x{width}; {count}, {scale}", fontsize=10,
                    y=1 - 0.1 / fig_h, va="top")
    return figure


def prediction_figure(pixels: np.ndarray, prediction: list[TaskPrediction], title: str) -> plt.Figure:
    """The (C, H, W) uint8 input on the left, each task's top classes as probability bars on the right."""
    figure = plt.figure(figsize=(9, max(3.5, 1.5 * len(prediction) + 0.7)), layout="constrained")
    grid = figure.add_gridspec(len(prediction), 2, width_ratios=(1, 1.3))
    picture = figure.add_subplot(grid[:, 0])
    show_image(picture, pixels)
    picture.axis("off")
    picture.set_title(f"model input, {pixels.shape[1]}x{pixels.shape[2]}", fontsize=9)
    for row, guess in enumerate(prediction):
        axis = figure.add_subplot(grid[row, 1])
        names, values = zip(*guess.top)
        bars = axis.barh(range(len(names)), values, color=["tab:blue"] + ["tab:gray"] * (len(names) - 1))
        axis.set_yticks(range(len(names)), names, fontsize=9)
        axis.invert_yaxis()  # most likely on top
        axis.set_xlim(0, 1.2)  # room for the percentage right of a full bar
        axis.bar_label(bars, [f"{v:.1%}" for v in values], padding=3, fontsize=9)
        axis.set_title(f"{guess.task}: {guess.predicted}", fontsize=10, loc="left", fontweight="bold")
        # The percentages say it all; an x axis per task would only crowd the next task's title.
        axis.xaxis.set_visible(False)
        axis.spines[["top", "right", "bottom"]].set_visible(False)
    figure.suptitle(f"{title}: the most likely classes of each task", fontsize=11)
    return figure


def cam_figure(pixels: np.ndarray, heat: np.ndarray, title: str) -> plt.Figure:
    """The (C, H, W) uint8 input, and the (H, W) heat map drawn over it."""
    figure, (plain, overlay) = plt.subplots(1, 2, figsize=(8, 4.6), layout="constrained")
    show_image(plain, pixels)
    plain.axis("off")
    plain.set_title("input", fontsize=9)
    show_image(overlay, pixels)
    overlay.axis("off")
    # Scaled to the map's own peak: Grad-CAM values have no absolute meaning, only where they are high does.
    shown = overlay.imshow(heat / max(float(heat.max()), 1e-12), cmap="jet", alpha=0.5, vmin=0, vmax=1,
                           interpolation="bilinear")
    overlay.set_title("Grad-CAM over the input", fontsize=9)
    bar = figure.colorbar(shown, ax=overlay, fraction=0.046, pad=0.04)
    bar.set_label("share of the peak", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    figure.suptitle(title, fontsize=10)
    return figure
