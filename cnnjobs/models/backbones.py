"""torchvision networks as backbones: the ImageNet classifier's last Linear becomes the identity, the heads of
`build_model` take its place.

`model.pretrained: true` goes through torchvision's own weights API (`get_model(name, weights=...DEFAULT)`),
which downloads into torch's hub cache once (`$TORCH_HOME/hub/checkpoints`) and reads it from there afterwards.
"""

from __future__ import annotations

import os
from functools import partial

import torch
import torchvision
from torch import nn

from cnnjobs.errors import JobError
from cnnjobs.models.registry import register
from cnnjobs.spec import ModelSpec

# name -> dotted path of the ImageNet classifier's last Linear (sizes, weights and options: models/catalog.py)
_CLASSIFIERS = {
    "mobilenet_v2": "classifier.1",
    "resnet18": "fc",
    "resnet50": "fc",
    "resnext50_32x4d": "fc",
    "efficientnet_b0": "classifier.1",
    "convnext_tiny": "classifier.2",
}


def torchvision_backbone(name: str, spec: ModelSpec, channels: int, image_size: tuple[int, int]
                         ) -> tuple[nn.Module, int]:
    """torchvision's `name` without its last Linear; `(network, features)`.

    The options were checked against the catalog when the job was loaded (width: mobilenet_v2 only; dropout:
    the networks whose classifier starts with a Dropout, which is kept)."""
    classifier = _CLASSIFIERS[name]
    kwargs: dict = {}
    if spec.width != 1:
        kwargs["width_mult"] = spec.width
    if spec.dropout is not None:
        kwargs["dropout"] = spec.dropout
    network = _load(name, spec.pretrained, kwargs)
    last = network.get_submodule(classifier)
    _replace(network, classifier, nn.Identity())
    if channels != 3:
        _adapt_stem(network, channels)
    return network, last.in_features


def _load(name: str, pretrained: bool, kwargs: dict) -> nn.Module:
    """torchvision's constructor, with ImageNet weights when asked; an offline download becomes a JobError."""
    if not pretrained:
        return torchvision.models.get_model(name, weights=None, **kwargs)
    weights = torchvision.models.get_model_weights(name).DEFAULT
    try:
        return torchvision.models.get_model(name, weights=weights, **kwargs)
    except OSError as exc:  # URLError, socket and HTTP errors are all OSErrors
        cached = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(weights.url))
        raise JobError(f"model.pretrained: cannot download {name}'s ImageNet weights ({exc.__class__.__name__}: "
                       f"offline?); put {weights.url} at {cached}, or set model.weights: PATH") from None


def _replace(network: nn.Module, dotted: str, module: nn.Module) -> None:
    parent, _, child = dotted.rpartition(".")
    setattr(network.get_submodule(parent) if parent else network, child, module)


def _adapt_stem(network: nn.Module, channels: int) -> None:
    """Make the first convolution take `channels` inputs; pretrained RGB filters are summed over colour
    (a grey image then gives each filter the response it gave the same image in RGB)."""
    name, conv = next((n, m) for n, m in network.named_modules() if isinstance(m, nn.Conv2d))
    stem = nn.Conv2d(channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                     conv.groups, conv.bias is not None)
    with torch.no_grad():
        stem.weight.copy_(conv.weight.sum(1, keepdim=True).expand_as(stem.weight) / channels)
        if conv.bias is not None:
            stem.bias.copy_(conv.bias)
    _replace(network, name, stem)


for _name in _CLASSIFIERS:
    register(_name)(partial(torchvision_backbone, _name))
