"""Where architectures enter: the `register` decorator and the table it fills, plus what builders share.

The tutorials' CNNs (`tutorials.py`) and the torchvision networks (`backbones.py`) import this module, and the factory
(`factory.py`) imports them: no module imports the factory back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch
from torch import nn

from cnnjobs.models import catalog

if TYPE_CHECKING:
    from cnnjobs.spec import ModelSpec

Backbone = Callable[["ModelSpec", int, tuple[int, int]], tuple[nn.Module, int]]

BUILDERS: dict[str, Backbone] = {}


def register(name: str) -> Callable[[Backbone], Backbone]:
    """Decorator: the constructor of the catalog's architecture `name` (add it with `catalog.add` first)."""
    catalog.architecture(name)

    def add(fn: Backbone) -> Backbone:
        if name in BUILDERS:
            raise ValueError(f"architecture {name!r} is registered twice")
        BUILDERS[name] = fn
        return fn

    return add


def flat_features(module: nn.Module, channels: int, image_size: tuple[int, int]) -> int:
    """Size of `module`'s flattened output for one image: how seed CNNs size their first dense layer."""
    module.eval()  # a probe must not move BatchNorm's running statistics
    with torch.no_grad():
        dim = int(module(torch.zeros(1, channels, *image_size)).flatten(1).shape[1])
    module.train()
    return dim
