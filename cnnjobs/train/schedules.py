"""What changes the optimization as epochs pass: the optimizer, the LR schedule, and patience counters for
reduce-on-plateau and early stopping (Keras' semantics, as in seed 004: act after `patience` validations
without an improvement larger than `min_delta`).

All decisions are functions of the validation metrics alone, which every worker computes identically, so every
worker lowers the LR and stops at the same epoch without talking to the others.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Literal

import torch
from torch import nn

from cnnjobs.metrics import is_better, metric_mode
from cnnjobs.spec import CosineSchedule, PlateauSchedule, StepSchedule, TrainSpec


def make_optimizer(params: Iterable[nn.Parameter], spec: TrainSpec) -> torch.optim.Optimizer:
    """The optimizer named by `train.optimizer`."""
    if spec.optimizer == "sgd":
        return torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum, nesterov=spec.nesterov,
                               weight_decay=spec.weight_decay)
    if spec.optimizer == "adam":
        return torch.optim.Adam(params, lr=spec.lr, weight_decay=spec.weight_decay)
    return torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay)


@dataclass
class Patience:
    """Validations since `monitor` last improved by more than `min_delta`."""

    monitor: str
    mode: Literal["min", "max"]
    min_delta: float = 0.0
    best: float | None = None
    wait: int = 0

    def update(self, metrics: dict[str, Any]) -> int:
        """Count a validation (epochs without `monitor` are skipped); returns the validations waited."""
        if self.monitor in metrics:
            value = float(metrics[self.monitor])
            if is_better(value, self.best, self.mode, self.min_delta):
                self.best, self.wait = value, 0
            else:
                self.wait += 1
        return self.wait


def early_stopping(spec: TrainSpec) -> Patience | None:
    """The counter behind `train.early_stopping`; stop when its `wait` reaches the patience."""
    stop = spec.early_stopping
    if stop is None:
        return None
    monitor = stop.monitor or spec.monitor
    return Patience(monitor, stop.mode or metric_mode(monitor), stop.min_delta)


class LrSchedule:
    """`train.schedule`: cosine moves the LR after every batch, step after every epoch, plateau after every
    validation that did not improve for `patience` validations."""

    def __init__(self, spec: TrainSpec, optimizer: torch.optim.Optimizer, steps_per_epoch: int) -> None:
        self.kind = spec.schedule
        self.optimizer = optimizer
        self.scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
        self.plateau: Patience | None = None
        if isinstance(self.kind, CosineSchedule):
            total = max(spec.epochs * steps_per_epoch, 1)
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(
                optimizer, _cosine(total, self.kind.warmup_epochs * steps_per_epoch, self.kind.min_lr / spec.lr))
        elif isinstance(self.kind, StepSchedule):
            self.scheduler = torch.optim.lr_scheduler.StepLR(optimizer, self.kind.step_size, self.kind.gamma)
        elif isinstance(self.kind, PlateauSchedule):
            monitor = self.kind.monitor or spec.monitor
            self.plateau = Patience(monitor, self.kind.mode or metric_mode(monitor), self.kind.min_delta)

    @property
    def lr(self) -> float:
        """The current LR (of the first parameter group)."""
        return float(self.optimizer.param_groups[0]["lr"])

    def after_batch(self) -> None:
        if isinstance(self.kind, CosineSchedule):
            self.scheduler.step()

    def after_epoch(self, metrics: dict[str, Any]) -> None:
        """Advance per-epoch schedules; `metrics` holds the validation metrics when the epoch validated."""
        if isinstance(self.kind, StepSchedule):
            self.scheduler.step()
        elif self.plateau is not None and self.plateau.update(metrics) >= self.kind.patience:
            for group in self.optimizer.param_groups:
                group["lr"] = max(group["lr"] * self.kind.factor, self.kind.min_lr)
            self.plateau.wait = 0

    def state_dict(self) -> dict[str, Any]:
        return {"scheduler": self.scheduler.state_dict() if self.scheduler else None,
                "plateau": asdict(self.plateau) if self.plateau else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scheduler and state.get("scheduler"):
            self.scheduler.load_state_dict(state["scheduler"])
        if self.plateau and state.get("plateau"):
            self.plateau = Patience(**state["plateau"])


def _cosine(total_steps: int, warmup_steps: float, floor: float):
    """LR factor after `step` batches: linear warmup to 1, then half a cosine down to `floor`."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = min((step - warmup_steps) / max(total_steps - warmup_steps, 1), 1.0)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor
