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

# name -> (dotted path of the ImageNet classifier's last Linear, smallest image side, where a seed uses it)
_NETWORKS = {
    "mobilenet_v2": ("classifier.1", 8, "torchvision; seed 002 (fashion, three heads)"),
    "resnet18": ("fc", 8, "torchvision"),
    "resnet50": ("fc", 8, "torchvision"),
    "resnext50_32x4d": ("fc", 8, "torchvision; seed 003 (transfer learning)"),
    "efficientnet_b0": ("classifier.1", 8, "torchvision"),
    "convnext_tiny": ("classifier.2", 32, "torchvision"),  # 4x4 stem + three 2x2 downsamples, no padding
}
_TAKES_DROPOUT = {"mobilenet_v2", "efficientnet_b0"}  # their classifier starts with a Dropout we keep


def torchvision_backbone(name: str, spec: ModelSpec, channels: int, image_size: tuple[int, int]
                         ) -> tuple[nn.Module, int]:
    """torchvision's `name` without its last Linear; `(network, features)`."""
    classifier, _, _ = _NETWORKS[name]
    kwargs: dict = {}
    if spec.width != 1:
        if name != "mobilenet_v2":
            raise JobError(f"model.width: {name} has a fixed width (only the seed CNNs and mobilenet_v2 take one)")
        if spec.pretrained:
            raise JobError("model.width: ImageNet weights exist for width 1 only; drop model.pretrained or width")
        kwargs["width_mult"] = spec.width
    if spec.dropout is not None:
        if name not in _TAKES_DROPOUT:
            raise JobError(f"model.dropout: {name} has no dropout of its own; use model.head_dropout")
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


for _name, (_, _min_size, _source) in _NETWORKS.items():
    register(_name, source=_source, default_size=(224, 224), min_size=_min_size,
             pretrained=True)(partial(torchvision_backbone, _name))
