"""One registry of architectures and one factory that puts a head per task on top of them.

An architecture is a function `(in_channels, image_size, dropout) -> (backbone, feature_dim)`: the backbone maps
images to flat features, and `build_model` adds one linear head per task, so every model answers
`model(x) -> {task: logits}` whatever the number of tasks.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch
from torch import nn

if TYPE_CHECKING:
    from cnnjobs.spec import ModelSpec

Backbone = Callable[[int, tuple[int, int], "float | None"], tuple[nn.Module, int]]


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows of one architecture."""

    name: str
    build: Backbone
    source: str
    default_size: tuple[int, int]


_REGISTRY: dict[str, ModelInfo] = {}


def register(name: str, *, source: str, default_size: tuple[int, int]) -> Callable[[Backbone], Backbone]:
    """Decorator: add a backbone constructor to the registry under `name`."""

    def add(fn: Backbone) -> Backbone:
        if name in _REGISTRY:
            raise ValueError(f"architecture {name!r} is registered twice")
        _REGISTRY[name] = ModelInfo(name, fn, source, default_size)
        return fn

    return add


def _load_builtin() -> None:
    # Imported for their @register side effect; kept here so `list_models` always sees every architecture.
    from cnnjobs.models import seeds  # noqa: F401


def list_models(pattern: str = "*") -> list[str]:
    """Registered architecture names matching a shell-style pattern, sorted."""
    _load_builtin()
    return sorted(name for name in _REGISTRY if fnmatch.fnmatch(name, pattern))


def model_info(name: str) -> ModelInfo:
    """The registry entry of `name` (KeyError if unknown; the job spec has validated names already)."""
    _load_builtin()
    return _REGISTRY[name]


class MultiHead(nn.Module):
    """A backbone shared by one linear head per task; `forward` returns `{task: logits}`."""

    def __init__(self, backbone: nn.Module, feature_dim: int, num_classes: dict[str, int]) -> None:
        super().__init__()
        self.backbone = backbone
        self.heads = nn.ModuleDict({task: nn.Linear(feature_dim, n) for task, n in num_classes.items()})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.backbone(x)
        return {task: head(features) for task, head in self.heads.items()}


def build_model(spec: "ModelSpec", num_classes: dict[str, int], image_size: tuple[int, int],
                channels: int) -> MultiHead:
    """Build `spec.arch` for images of `channels` x `image_size` with one head per task."""
    backbone, dim = model_info(spec.arch).build(channels, tuple(image_size), spec.dropout)
    return MultiHead(backbone, dim, num_classes)


def flat_features(module: nn.Module, channels: int, image_size: tuple[int, int]) -> int:
    """Size of `module`'s flattened output for one image: how seed CNNs size their first dense layer."""
    with torch.no_grad():
        return int(module(torch.zeros(1, channels, *image_size)).flatten(1).shape[1])
