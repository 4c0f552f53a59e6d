"""What `cnnjobs models` shows: the registry with parameter counts, and one model's layers with output shapes
(Keras' `model.summary()`, seed 000), found by running one image through forward hooks."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from cnnjobs.models import catalog
from cnnjobs.models.registry import build_model, list_models
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


def count_params(model: nn.Module) -> int:
    """All parameters, trainable or not."""
    return sum(p.numel() for p in model.parameters())


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
    size = image_size or catalog.architecture(spec.arch).default_size
    model = build_model(spec, num_classes or {"label": 10}, size, channels, init_weights=False).eval()
    shown = {name: module for name, module in model.named_modules()
             if name and (not list(module.children()) or (depth is not None and name.count(".") + 1 == depth))
             and (depth is None or name.count(".") + 1 <= depth)}
    rows: dict[str, LayerRow] = {}

    def hook(name: str):
        def record(module: nn.Module, _inputs, output) -> None:
            if name not in rows and isinstance(output, torch.Tensor):  # a module used twice is listed once
                rows[name] = LayerRow(name, type(module).__name__, tuple(output.shape[1:]), count_params(module))
        return record

    handles = [module.register_forward_hook(hook(name)) for name, module in shown.items()]
    try:
        with torch.no_grad():
            model(torch.zeros(1, channels, *size))
    finally:
        for handle in handles:
            handle.remove()
    return list(rows.values()), count_params(model)
