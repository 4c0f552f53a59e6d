"""The heads on top of a backbone: one per task, softmax over the classes or one sigmoid logit for two classes.

Whatever the head, `class_scores` and `predicted_class` turn its logits into per-class probabilities and class
indices, so metrics and prediction need not know how a task's output is shaped.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Output = Literal["softmax", "sigmoid"]


class MultiHead(nn.Module):
    """A backbone shared by one head (optional dropout + linear) per task; `forward` returns `{task: logits}`.

    A `sigmoid` task has one logit (the score of class 1), as in seed 000's `Dense(1, sigmoid)`.
    """

    def __init__(self, backbone: nn.Module, feature_dim: int, num_classes: dict[str, int],
                 outputs: dict[str, Output], dropout: float = 0.0) -> None:
        super().__init__()
        self.backbone = backbone
        self.backbone_frozen = False
        self.heads = nn.ModuleDict()
        for task, n in num_classes.items():
            size = 1 if outputs.get(task) == "sigmoid" else n
            linear = nn.Linear(feature_dim, size)
            self.heads[task] = nn.Sequential(nn.Dropout(dropout), linear) if dropout else linear

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.backbone(x)
        return {task: head(features) for task, head in self.heads.items()}

    def freeze_backbone(self, frozen: bool = True) -> None:
        """Train only the heads (transfer learning); a frozen backbone also keeps its BatchNorm statistics."""
        self.backbone_frozen = frozen
        for parameter in self.backbone.parameters():
            parameter.requires_grad = not frozen
        self.train(self.training)

    def train(self, mode: bool = True) -> "MultiHead":
        super().train(mode)
        if self.backbone_frozen:
            self.backbone.eval()  # frozen means frozen: no running-stat updates, no dropout in the features
        return self


def task_loss(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy for softmax heads, binary cross-entropy for a one-logit sigmoid head."""
    if logits.shape[1] == 1:
        target = labels.float() * (1 - label_smoothing) + 0.5 * label_smoothing
        return F.binary_cross_entropy_with_logits(logits[:, 0], target)
    return F.cross_entropy(logits, labels, label_smoothing=label_smoothing)


def class_scores(logits: torch.Tensor) -> torch.Tensor:
    """Per-class probabilities (N, classes), also for a one-logit sigmoid head (two classes)."""
    if logits.shape[1] == 1:
        positive = torch.sigmoid(logits)
        return torch.cat([1 - positive, positive], dim=1)
    return torch.softmax(logits, dim=1)


def predicted_class(logits: torch.Tensor) -> torch.Tensor:
    """The predicted class index per row."""
    return (logits[:, 0] > 0).long() if logits.shape[1] == 1 else logits.argmax(1)
