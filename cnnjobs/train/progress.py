"""A tiny actor through which rank 0 tells the driver where training is, batch by batch and epoch by epoch.

Ray Train's own reports reach the driver only at the end of `fit()`; the driver polls this actor instead to draw
live progress and to write `metrics.csv` as epochs finish. It outlives the worker group, so it also records
restarts (a worker group continuing from a checkpoint drops the epochs after it, so every epoch is listed once)
and errors that a restart would only repeat.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import ray


@dataclass
class Snapshot:
    """Where training stands: the current epoch and step, every finished epoch, restarts, a fatal error."""

    epoch: int = 0
    step: int = 0
    steps: int = 0
    loss: float | None = None
    epochs: list[dict[str, Any]] = field(default_factory=list)  # metrics of each finished epoch, in order
    first_step_at: float | None = None  # wall clock (time.time) of the first finished training step
    restarts: list[dict[str, Any]] = field(default_factory=list)  # {at, from_epoch, reason}
    fatal: str | None = None
    workers: dict[int, str] = field(default_factory=dict)  # rank -> the Ray node it runs on
    probe: dict[str, Any] | None = None  # `cnnjobs plan`: what rank 0 measured


@ray.remote(num_cpus=0)
class ProgressTracker:
    """Collects progress notes from rank 0; `poll` hands them to the driver."""

    def __init__(self, resuming: bool = False, rows: list[dict[str, Any]] | None = None) -> None:
        self.now = Snapshot(epochs=list(rows or []))  # a resumed run's epochs, until the loop says where it starts
        self.attempts = 0
        self.resuming = resuming  # this session continues an earlier run (`submit --resume`)

    def started(self, from_epoch: int | None, passed: list[str], rows: list[dict[str, Any]]) -> None:
        """A worker group started, from the checkpoint of `from_epoch` (None: from scratch) whose epoch rows are
        `rows`; `passed` lists the checkpoints it had to skip. The epochs after the checkpoint are dropped: they
        are trained again."""
        self.attempts += 1
        self.now.epochs = list(rows)
        if from_epoch is None:
            return
        reason = "resume" if self.attempts == 1 and self.resuming else "worker failure"
        if passed:
            reason += f" (passed over: {'; '.join(passed)})"
        self.now.restarts.append({"at": time.time(), "from_epoch": from_epoch, "reason": reason})

    def placed(self, rank: int, node_id: str) -> None:
        """Where a worker runs (the latest attempt's placement)."""
        self.now.workers[rank] = node_id

    def step(self, epoch: int, step: int, steps: int, loss: float | None) -> None:
        """Where rank 0 is; `loss` is the epoch's running loss as last read from the device (None: not yet)."""
        self.now.epoch, self.now.step, self.now.steps = epoch, step, steps
        if loss is not None:
            self.now.loss = loss
        if self.now.first_step_at is None:
            self.now.first_step_at = time.time()

    def epoch(self, metrics: dict[str, Any]) -> None:
        self.now.epochs.append(metrics)
        self.now.step = self.now.steps

    def probed(self, measured: dict[str, Any]) -> None:
        self.now.probe = measured

    def fatal(self, message: str) -> None:
        self.now.fatal = message

    def fatal_error(self) -> str | None:
        return self.now.fatal

    def poll(self) -> Snapshot:
        """Everything so far."""
        return self.now


class Reporter:
    """What a worker tells the driver's `ProgressTracker`: from every rank, where it runs and an error a restart
    would only repeat; from rank 0 only, the steps, epochs and probe results (nothing on the other ranks). Without a
    tracker (a search's trials, which report to Tune) it does nothing."""

    def __init__(self, tracker: Any, rank: int) -> None:
        self.tracker, self.rank = tracker, rank
        self.lead = tracker is not None and rank == 0

    def placed(self, node_id: str) -> None:
        if self.tracker is not None:
            self.tracker.placed.remote(self.rank, node_id)

    def fatal_error(self) -> str | None:
        """The error an earlier attempt of this run hit, which a restart would only repeat (see `fatal`)."""
        return ray.get(self.tracker.fatal_error.remote()) if self.tracker is not None else None

    def fatal(self, message: str) -> None:
        """Record an error a restart would only repeat, so that a restarted worker group returns at once."""
        if self.tracker is not None:
            ray.get(self.tracker.fatal.remote(message))

    def started(self, from_epoch: int | None, passed: list[str], rows: list[dict[str, Any]]) -> None:
        if self.lead:
            ray.get(self.tracker.started.remote(from_epoch, passed, rows))

    def step(self, epoch: int, step: int, steps: int, loss: float | None) -> None:
        if self.lead:  # not waited for: a note for the live view
            self.tracker.step.remote(epoch, step, steps, loss)

    def epoch(self, metrics: dict[str, Any]) -> None:
        if self.lead:  # waited for: the driver's last poll, once fit() returns, must find this epoch
            ray.get(self.tracker.epoch.remote(metrics))

    def probed(self, measured: dict[str, Any]) -> None:
        if self.lead:
            ray.get(self.tracker.probed.remote(measured))
