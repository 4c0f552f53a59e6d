"""What `cnnjobs models` shows: the registry with parameter counts, and one model's layers with output shapes
(Keras' `model.summary()`, seed 000), found by running one image through forward hooks."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from cnnjobs.models import catalog
from cnnjobs.models.factory import build_model, list_models
from cnnjobs.spec import ModelSpec


@dataclass(frozen=True)
class ModelRow:
    """One registered architecture, counted at one input size."""

    name: str
    source: str
    default_size: tuple[int, int]
    min_size: int
    pretrained: bool
    image_size: tuple[int, int]
    params: int | None  # None when `image_size` is below the architecture's minimum


@dataclass(frozen=True)
class LayerRow:
    """One layer of a model: its dotted name, type, output shape for one image, and parameters."""

    name: str
    kind: str
    output_shape: tuple[int, ...]
    params: int
    trainable: int  # of `params`, those the optimizer updates (a frozen backbone's are not)


@dataclass(frozen=True)
class HeadRow:
    """One task's head: how it outputs (softmax: one logit per class; sigmoid: one logit) and how many."""

    task: str
    output: str
    outputs: int
    classes: int


@dataclass(frozen=True)
class ModelCard:
    """A job's actual model: its layers with output shapes, its heads, and trainable vs frozen parameters."""

    arch: str
    image_size: tuple[int, int]
    channels: int
    layers: list[LayerRow]
    heads: list[HeadRow]
    params: int
    trainable: int


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """All parameters (or only those that require gradients)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def list_registry(image_size: tuple[int, int] | None = None, channels: int = 3,
                  classes: int = 10) -> list[ModelRow]:
    """Every architecture with its parameter count at `image_size` (each one's default size when None)."""
    rows = []
    for name in list_models():
        info = catalog.architecture(name)
        size = image_size or info.default_size
        params = None
        if min(size) >= info.min_size:
            params = count_params(build_model(ModelSpec(arch=name), {"label": classes}, size, channels))
        rows.append(ModelRow(name, info.source, info.default_size, info.min_size, info.pretrained, size, params))
    return rows


def layer_table(spec: ModelSpec, image_size: tuple[int, int] | None = None, channels: int = 3,
                num_classes: dict[str, int] | None = None, depth: int | None = None) -> tuple[list[LayerRow], int]:
    """The layers of `spec.arch` in the order they run, with the output shape of each for one image, and the
    model's parameter count.

    `depth` cuts the tree: modules nested deeper than `depth` names are folded into their ancestor's row.
    """
    card = model_card(spec, image_size, channels, num_classes or {"label": 10}, depth)
    return card.layers, card.params


def model_card(spec: ModelSpec, image_size: tuple[int, int] | None, channels: int, num_classes: dict[str, int],
               depth: int | None = None) -> ModelCard:
    """The model a job trains: layers (see `layer_table`), one head per task, trainable and frozen parameters
    (`model.freeze: backbone` freezes all but the heads). Weights are not loaded: the shapes are the same."""
    size = tuple(image_size or catalog.architecture(spec.arch).default_size)
    model = build_model(spec, num_classes, size, channels, init_weights=False).eval()
    shown = {name: module for name, module in model.named_modules()
             if name and (not list(module.children()) or (depth is not None and name.count(".") + 1 == depth))
             and (depth is None or name.count(".") + 1 <= depth)}
    rows: dict[str, LayerRow] = {}

    def hook(name: str):
        def record(module: nn.Module, _inputs, output) -> None:
            if name not in rows and isinstance(output, torch.Tensor):  # a module used twice is listed once
                rows[name] = LayerRow(name, type(module).__name__, tuple(output.shape[1:]), count_params(module),
                                      count_params(module, trainable_only=True))
        return record

    handles = [module.register_forward_hook(hook(name)) for name, module in shown.items()]
    try:
        with torch.no_grad():
            outputs = model(torch.zeros(1, channels, *size))
    finally:
        for handle in handles:
            handle.remove()
    heads = [HeadRow(task, "sigmoid" if logits.shape[1] == 1 else "softmax", logits.shape[1], num_classes[task])
             for task, logits in outputs.items()]
    return ModelCard(spec.arch, size, channels, list(rows.values()), heads, count_params(model),
                     count_params(model, trainable_only=True))
