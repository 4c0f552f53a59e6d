"""A tiny actor through which rank 0 tells the driver where training is, batch by batch and epoch by epoch.

Ray Train's own reports reach the driver only at the end of `fit()`; the driver polls this actor instead to draw
live progress and to write `metrics.csv` as epochs finish.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import ray


@dataclass
class Snapshot:
    """Where training stands: the current epoch and step, and the epochs finished since the last poll."""

    epoch: int = 0
    step: int = 0
    steps: int = 0
    loss: float | None = None
    new_epochs: list[dict[str, Any]] = field(default_factory=list)
    first_step_at: float | None = None  # wall clock (time.time) of the first finished training step


@ray.remote(num_cpus=0)
class ProgressTracker:
    """Collects progress notes from rank 0; `poll` hands them to the driver."""

    def __init__(self) -> None:
        self.now = Snapshot()
        self.epochs: list[dict[str, Any]] = []

    def step(self, epoch: int, step: int, steps: int, loss: float) -> None:
        self.now.epoch, self.now.step, self.now.steps, self.now.loss = epoch, step, steps, loss
        if self.now.first_step_at is None:
            self.now.first_step_at = time.time()

    def epoch(self, metrics: dict[str, Any]) -> None:
        self.epochs.append(metrics)
        self.now.step = self.now.steps

    def poll(self, seen: int) -> Snapshot:
        """The current position plus the epoch metrics after the first `seen`."""
        return Snapshot(self.now.epoch, self.now.step, self.now.steps, self.now.loss, self.epochs[seen:],
                        self.now.first_step_at)
