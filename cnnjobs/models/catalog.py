"""What is known about each architecture without building it: sizes, weights, options.

The job schema reads this catalog (torch-free) to refuse an unknown architecture, an option the network does not
have, ImageNet weights that do not exist, or images too small for its strides, all when the YAML is loaded.
`registry.py` binds a constructor to every name listed here.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

# The model options an architecture may take besides the heads (ModelSpec fields).
WIDTH, DROPOUT, CONV_DROPOUT = "width", "dropout", "conv_dropout"


@dataclass(frozen=True)
class Architecture:
    """One architecture's facts: where it comes from, the input sizes it accepts, its weights and options."""

    name: str
    source: str
    default_size: tuple[int, int]
    min_size: int  # smallest image side its strides and kernels accept (checked by a test that builds each)
    pretrained: bool = False  # whether `model.pretrained: true` has ImageNet weights to load
    options: frozenset[str] = frozenset()  # which of model.width / dropout / conv_dropout it takes


_SEED_OPTIONS = frozenset({WIDTH, DROPOUT, CONV_DROPOUT})
_TORCHVISION = "torchvision"

CATALOG: dict[str, Architecture] = {arch.name: arch for arch in (
    Architecture("lenet5", "seed 001 (LeNet-5, MNIST)", (28, 28), 16, options=frozenset({WIDTH, DROPOUT})),
    Architecture("catsdogs_cnn", "seed 000 (cats vs dogs, Keras)", (150, 150), 22, options=_SEED_OPTIONS),
    Architecture("bn_cnn", "seed 004 (dogs vs cats, Keras, BatchNorm)", (128, 128), 22, options=_SEED_OPTIONS),
    Architecture("cfl_cnn", "seed 003 (car / frog / lizard, PyTorch)", (100, 100), 8, options=_SEED_OPTIONS),
    Architecture("mobilenet_v2", f"{_TORCHVISION}; seed 002 (fashion, three heads)", (224, 224), 8, True,
                 frozenset({WIDTH, DROPOUT})),
    Architecture("resnet18", _TORCHVISION, (224, 224), 8, True),
    Architecture("resnet50", _TORCHVISION, (224, 224), 8, True),
    Architecture("resnext50_32x4d", f"{_TORCHVISION}; seed 003 (transfer learning)", (224, 224), 8, True),
    Architecture("efficientnet_b0", _TORCHVISION, (224, 224), 8, True, frozenset({DROPOUT})),
    # 4x4 stem + three 2x2 downsamples, no padding
    Architecture("convnext_tiny", _TORCHVISION, (224, 224), 32, True),
)}


def names() -> list[str]:
    """Every architecture name, sorted."""
    return sorted(CATALOG)


def architecture(name: str) -> Architecture:
    """The facts of `name`; ValueError naming the known ones (and the closest) when there is no such name."""
    if name not in CATALOG:
        close = difflib.get_close_matches(name, names(), n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(names())}"
        raise ValueError(f"unknown architecture {name!r}{hint}")
    return CATALOG[name]


def add(arch: Architecture) -> None:
    """Add an architecture of your own (then `registry.register(arch.name)` its constructor)."""
    if arch.name in CATALOG:
        raise ValueError(f"architecture {arch.name!r} is in the catalog already")
    CATALOG[arch.name] = arch
