"""The seed tutorials' own CNNs (LeNet-5, the cats-vs-dogs CNN, the BatchNorm CNN, the
car/frog/lizard CNN), sized from the input instead of hard-coded flatten sizes.

Each constructor returns the network up to its last hidden layer; `build_model` adds the output layer (the
seeds' `Dense(classes)`) as a head. `model.width` scales every channel and unit count; `model.dropout` is the
dropout before the head and `model.conv_dropout` the one inside the conv blocks (defaults: the seed's).
"""

from __future__ import annotations

from torch import nn

from cnnjobs.models.registry import flat_features, register
from cnnjobs.spec import ModelSpec


def _units(count: int, width: float) -> int:
    return max(1, round(count * width))


def _dropout(value: float | None, default: float) -> list[nn.Module]:
    p = default if value is None else value
    return [nn.Dropout(p)] if p else []


@register("lenet5")
def lenet5(spec: ModelSpec, channels: int, image_size: tuple[int, int]) -> tuple[nn.Module, int]:
    """Conv(6,5x5)-MaxPool-Conv(16,5x5)-MaxPool-Dense(120)-Dense(84), ReLU and no padding as in the Keras seed."""
    c1, c2, d1, d2 = (_units(n, spec.width) for n in (6, 16, 120, 84))
    features = nn.Sequential(
        nn.Conv2d(channels, c1, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
    )
    dim = flat_features(features, channels, image_size)
    layers = [features, nn.Linear(dim, d1), nn.ReLU(), nn.Linear(d1, d2), nn.ReLU(), *_dropout(spec.dropout, 0)]
    return nn.Sequential(*layers), d2


@register("catsdogs_cnn")
def catsdogs_cnn(spec: ModelSpec, channels: int, image_size: tuple[int, int]) -> tuple[nn.Module, int]:
    """Conv(16,3x3)-MaxPool-Conv(32)-MaxPool-Conv(64)-MaxPool-Flatten-Dense(512), 'valid' padding as in Keras."""
    widths = [channels] + [_units(n, spec.width) for n in (16, 32, 64)]
    blocks: list[nn.Module] = []
    for c_in, c_out in zip(widths, widths[1:]):
        blocks += [nn.Conv2d(c_in, c_out, 3), nn.ReLU(), nn.MaxPool2d(2), *_dropout(spec.conv_dropout, 0)]
    features = nn.Sequential(*blocks, nn.Flatten())
    dense = _units(512, spec.width)
    dim = flat_features(features, channels, image_size)
    return nn.Sequential(features, nn.Linear(dim, dense), nn.ReLU(), *_dropout(spec.dropout, 0)), dense


@register("bn_cnn")
def bn_cnn(spec: ModelSpec, channels: int, image_size: tuple[int, int]) -> tuple[nn.Module, int]:
    """3 x [Conv(32/64/128,3x3)+BatchNorm+MaxPool+Dropout 0.25] + Dense(512)+BatchNorm+Dropout 0.5."""
    widths = [channels] + [_units(n, spec.width) for n in (32, 64, 128)]
    blocks: list[nn.Module] = []
    for c_in, c_out in zip(widths, widths[1:]):
        # Keras' order: the ReLU is the conv's activation, BatchNorm comes after it.
        blocks += [nn.Conv2d(c_in, c_out, 3), nn.ReLU(), nn.BatchNorm2d(c_out), nn.MaxPool2d(2),
                   *_dropout(spec.conv_dropout, 0.25)]
    features = nn.Sequential(*blocks, nn.Flatten())
    dense = _units(512, spec.width)
    dim = flat_features(features, channels, image_size)
    head = [nn.Linear(dim, dense), nn.ReLU(), nn.BatchNorm1d(dense), *_dropout(spec.dropout, 0.5)]
    return nn.Sequential(features, *head), dense


@register("cfl_cnn")
def cfl_cnn(spec: ModelSpec, channels: int, image_size: tuple[int, int]) -> tuple[nn.Module, int]:
    """Conv(8)-Conv(16)-Pool, Conv(32)-Pool, Conv(64)-Pool (3x3, dropout 0.1 after each conv), then
    Linear(1000)-Linear(96); as in the seed there is no activation between the linear layers."""
    c8, c16, c32, c64 = (_units(n, spec.width) for n in (8, 16, 32, 64))

    def conv(c_in: int, c_out: int) -> list[nn.Module]:
        return [nn.Conv2d(c_in, c_out, 3, padding=1), *_dropout(spec.conv_dropout, 0.1), nn.ReLU(inplace=True)]

    features = nn.Sequential(
        *conv(channels, c8), *conv(c8, c16), nn.MaxPool2d(2),
        *conv(c16, c32), nn.MaxPool2d(2),
        *conv(c32, c64), nn.MaxPool2d(2),
        nn.Flatten(),
    )
    hidden, out = _units(1000, spec.width), _units(96, spec.width)
    dim = flat_features(features, channels, image_size)
    return nn.Sequential(features, nn.Linear(dim, hidden), nn.Linear(hidden, out), *_dropout(spec.dropout, 0)), out
