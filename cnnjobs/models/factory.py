"""The one factory: a registered architecture with a head per task on top of it (`build_model`), and the list of
what is registered (`list_models`).

An architecture is a function `(spec, in_channels, image_size) -> (backbone, feature_dim)`: the backbone maps
images to flat features, and `build_model` adds one head per task, so every model answers
`model(x) -> {task: logits}` whatever the number of tasks. The seed CNNs (`tutorials.py`) and the torchvision
networks (`backbones.py`) enter through the same `register` decorator.
"""

from __future__ import annotations

import fnmatch
import os
import pickle
import re
from typing import TYPE_CHECKING

import torch
from torch import nn

from cnnjobs.errors import JobError
from cnnjobs.models import catalog
from cnnjobs.models.heads import MultiHead
from cnnjobs.models.registry import BUILDERS, Backbone, flat_features, register  # noqa: F401 - re-exported

if TYPE_CHECKING:
    from cnnjobs.spec import ModelSpec

def _load_builtin() -> None:
    # Imported for their @register side effect; kept here so `list_models` always sees every architecture.
    from cnnjobs.models import backbones, tutorials  # noqa: F401


def list_models(pattern: str = "*") -> list[str]:
    """Registered architecture names matching a shell-style pattern, sorted."""
    _load_builtin()
    return sorted(name for name in BUILDERS if fnmatch.fnmatch(name, pattern))


def build_model(spec: "ModelSpec", num_classes: dict[str, int], image_size: tuple[int, int],
                channels: int, *, init_weights: bool = True) -> MultiHead:
    """Build `spec.arch` for images of `channels` x `image_size` with one head per task.

    `init_weights=False` skips `model.pretrained` / `model.weights`, for callers that load a trained
    state dict right after (prediction), so they never download weights they would overwrite.
    """
    # The job's checks (catalog sizes and options) ran when it was loaded; these guard direct calls.
    arch = catalog.architecture(spec.arch)
    if min(image_size) < arch.min_size:
        raise JobError(f"data.image_size: {spec.arch} needs images of at least {arch.min_size} px "
                       f"(got {list(image_size)})")
    for key, problem in spec.option_problems():
        raise JobError(f"{key}: {problem}")
    if not init_weights:
        spec = spec.model_copy(update={"pretrained": False, "weights": None})
    _load_builtin()
    backbone, dim = BUILDERS[spec.arch](spec, channels, tuple(image_size))
    heads = {task: spec.heads[task].output if task in spec.heads else "softmax" for task in num_classes}
    model = MultiHead(backbone, dim, num_classes, heads, spec.head_dropout)
    if spec.weights:
        load_weights(model, spec.weights, spec.arch)
    model.freeze_backbone(spec.freeze == "backbone")
    return model


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """The state dict in `model.weights`, read with `weights_only=True` (tensors and plain values: unpickling
    anything else could run code); one JobError naming the key for every way the file can be wrong."""
    location = os.path.expanduser(path)
    if not os.path.isfile(location):
        raise JobError(f"model.weights: no such file {path}")
    try:
        state = torch.load(location, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch names the first global it refused ("GLOBAL posix.system"); other unpickling errors mean the
        # bytes are not a pickle at all.
        found = re.search(r"GLOBAL (\S+)", str(exc))
        if found is None:
            raise JobError(f"model.weights: {path} is not a PyTorch state dict (unreadable pickle)") from None
        raise JobError(f"model.weights: {path} holds pickled Python objects ({found.group(1)}), not only tensors; "
                       "refused (read with weights_only=True, which runs no code): save a state dict, "
                       "torch.save(model.state_dict(), PATH)") from None
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds for files that are not state dicts
        raise JobError(f"model.weights: {path} is not a PyTorch state dict ({exc.__class__.__name__})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise JobError(f"model.weights: {path} is not a state dict (a mapping of names to tensors)")
    return state


def load_weights(model: MultiHead, path: str, arch: str) -> None:
    """Load `model.weights`: a cnnjobs `best_model.pt` (heads that do not fit the tasks are left new) or a
    state dict of the bare network (e.g. a torchvision `.pth` file), whose classifier is ignored."""
    state = read_state_dict(path)
    whole = any(key.startswith("backbone.") for key in state)
    target: nn.Module = model if whole else model.backbone
    own = target.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    missing = [k for k in own if k not in usable and not k.startswith("heads.")]
    if missing:
        raise JobError(f"model.weights: {path} does not fit {arch}: {len(missing)} of {len(own)} tensors are "
                       f"missing or shaped differently (first: {missing[0]})")
    target.load_state_dict(usable, strict=False)
