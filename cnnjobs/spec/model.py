"""The `model:` section: an architecture from the catalog, its options, weights, freezing and the heads."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from cnnjobs.models import catalog
from cnnjobs.spec.base import Section


class HeadSpec(Section):
    """Options of one task's head (`model.heads.<task>`); tasks without an entry get the defaults."""

    weight: float = Field(1.0, gt=0, description="Factor of this task's loss in the summed loss.")
    output: Literal["softmax", "sigmoid"] = Field(
        "softmax", description="`sigmoid`: one logit with binary cross-entropy (two-class tasks only, as seed 000's "
        "`Dense(1, sigmoid)`); `softmax`: one logit per class with cross-entropy.")


class ModelSpec(Section):
    """The architecture, looked up by name in the model registry (`cnnjobs models` lists them)."""

    arch: str = Field(description="Registered architecture name, e.g. `lenet5`.")
    dropout: float | None = Field(None, ge=0, lt=1, description="Dropout before the heads (seed CNNs' dense "
                                  "dropout, mobilenet_v2/efficientnet_b0's classifier dropout); the architecture's "
                                  "own if unset.")
    conv_dropout: float | None = Field(None, ge=0, lt=1, description="Dropout inside the seed CNNs' conv blocks; "
                                       "the architecture's own if unset.")
    width: float = Field(1.0, gt=0, description="Multiplies the channel and unit counts (seed CNNs; mobilenet_v2's "
                         "width_mult).")
    head_dropout: float = Field(0.0, ge=0, lt=1, description="Dropout in front of each task's head (seed 002: 0.2).")
    heads: dict[str, HeadSpec] = Field(default_factory=dict, description="Per-task options, by task name.")
    pretrained: bool = Field(False, description="Start from torchvision's ImageNet weights (downloaded once to "
                             "torch's cache; torchvision architectures only).")
    weights: str | None = Field(None, description="Start from a local state dict: a cnnjobs `best_model.pt` or a "
                                "torchvision `.pth` file.")
    freeze: Literal["none", "backbone"] = Field("none", description="`backbone`: train only the heads (transfer "
                                                "learning, seed 003).")
    unfreeze_after: int | None = Field(None, gt=0, description="With `freeze: backbone`: train everything from "
                                       "this many epochs on.")

    @field_validator("arch")
    @classmethod
    def _known(cls, value: str) -> str:
        catalog.architecture(value)  # ValueError with the known names and a did-you-mean
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "ModelSpec":
        if self.pretrained and self.weights:
            raise ValueError("give model.pretrained or model.weights, not both")
        if self.unfreeze_after is not None and self.freeze != "backbone":
            raise ValueError("unfreeze_after needs freeze: backbone")
        return self

    def option_problems(self) -> list[tuple[str, str]]:
        """Options this architecture does not have, as (dotted key, problem): checked when the job is loaded."""
        arch = catalog.architecture(self.arch)
        problems = []
        if self.width != 1 and catalog.WIDTH not in arch.options:
            problems.append(("model.width", f"{self.arch} has a fixed width (only the seed CNNs and mobilenet_v2 "
                                            "take one)"))
        if self.dropout is not None and catalog.DROPOUT not in arch.options:
            problems.append(("model.dropout", f"{self.arch} has no dropout of its own; use model.head_dropout"))
        if self.conv_dropout is not None and catalog.CONV_DROPOUT not in arch.options:
            problems.append(("model.conv_dropout", f"{self.arch} has no dropout in its conv blocks"))
        if self.pretrained and not arch.pretrained:
            problems.append(("model.pretrained", f"{self.arch} has no pretrained weights (only the torchvision "
                                                 "architectures do); use model.weights: PATH for weights of your own"))
        if self.pretrained and self.width != 1:
            problems.append(("model.width", "ImageNet weights exist for width 1 only; drop model.pretrained or "
                                            "model.width"))
        return problems
