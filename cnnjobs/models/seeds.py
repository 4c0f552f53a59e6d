"""The seed tutorials' own CNNs, sized from the input instead of hard-coded flatten sizes."""

from __future__ import annotations

from torch import nn

from cnnjobs.models.registry import flat_features, register


@register("lenet5", source="seed 001 (LeNet-5, MNIST)", default_size=(28, 28))
def lenet5(channels: int, image_size: tuple[int, int], dropout: float | None) -> tuple[nn.Module, int]:
    """Conv(6,5x5)-MaxPool-Conv(16,5x5)-MaxPool-Dense(120)-Dense(84), ReLU as in the Keras seed."""
    features = nn.Sequential(
        nn.Conv2d(channels, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
    )
    dim = flat_features(features, channels, image_size)
    layers = [features, nn.Linear(dim, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers), 84
