"""The `train:` section: epochs, batches, optimizer, schedule, early stopping and what counts as the best epoch."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field, field_validator, model_validator

from cnnjobs.metrics import Mode, check_monitor, metric_mode
from cnnjobs.spec.base import Section


def _monitor(value: str | None) -> str | None:
    return None if value is None else check_monitor(value)


class PlateauSchedule(Section):
    """Multiply the LR by `factor` when `monitor` has not improved for `patience` validations (seed 004)."""

    type: Literal["plateau"] = "plateau"
    monitor: str | None = Field(None, description="Metric watched; `train.monitor` by default.")
    mode: Mode | None = Field(None, description="By default `min` for losses, `max` otherwise.")
    factor: float = Field(0.1, gt=0, lt=1, description="New LR = LR x factor.")
    patience: int = Field(10, ge=0, description="Validations without improvement before lowering the LR.")
    min_delta: float = Field(1e-4, ge=0, description="Smallest change that counts as an improvement.")
    min_lr: float = Field(0.0, ge=0, description="The LR never goes below this.")

    @field_validator("monitor")
    @classmethod
    def _known_metric(cls, value: str | None) -> str | None:
        return _monitor(value)


class CosineSchedule(Section):
    """Linear warmup from 0, then cosine decay to `min_lr` at the last epoch; updated every batch."""

    type: Literal["cosine"] = "cosine"
    warmup_epochs: float = Field(0.0, ge=0, description="Epochs (fractions allowed) of linear warmup.")
    min_lr: float = Field(0.0, ge=0, description="LR reached at the end of training.")


class StepSchedule(Section):
    """Multiply the LR by `gamma` every `step_size` epochs."""

    type: Literal["step"] = "step"
    step_size: int = Field(gt=0, description="Epochs between two reductions.")
    gamma: float = Field(0.1, gt=0, lt=1, description="New LR = LR x gamma.")


Schedule = Annotated[Union[PlateauSchedule, CosineSchedule, StepSchedule], Field(discriminator="type")]


class EarlyStoppingSpec(Section):
    """Stop when `monitor` has not improved by `min_delta` for `patience` validations; the best epoch's weights
    are the ones kept and tested (seed 003)."""

    patience: int = Field(gt=0, description="Validations without improvement before stopping.")
    min_delta: float = Field(0.0, ge=0, description="Smallest change that counts as an improvement.")
    monitor: str | None = Field(None, description="Metric watched; `train.monitor` by default.")
    mode: Mode | None = Field(None, description="By default `min` for losses, `max` otherwise.")

    @field_validator("monitor")
    @classmethod
    def _known_metric(cls, value: str | None) -> str | None:
        return _monitor(value)


class TrainSpec(Section):
    """The optimization: epochs, batches, optimizer, schedule and what counts as the best epoch."""

    epochs: int = Field(10, gt=0, description="Passes over the training split (the most, with early stopping).")
    batch_size: int = Field(64, gt=0, description="Images per optimizer step, across all workers (each worker "
                            "takes batch_size / num_workers), so N workers take the steps one worker would. Models "
                            "without BatchNorm learn the same on 1 or N workers; with BatchNorm, N GPU workers do "
                            "too (sync_batchnorm), N CPU workers normalize over their part of the batch.")
    optimizer: Literal["sgd", "adam", "adamw"] = Field("adam", description="The torch.optim optimizer.")
    lr: float = Field(1e-3, gt=0, description="Learning rate (the peak one with a schedule).")
    momentum: float = Field(0.0, ge=0, lt=1, description="SGD momentum.")
    nesterov: bool = Field(False, description="SGD with Nesterov momentum (needs momentum > 0).")
    weight_decay: float = Field(0.0, ge=0, description="L2 penalty (decoupled for adamw).")
    grad_clip: float | None = Field(None, gt=0, description="Clip the gradients' global norm to this value.")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="Label smoothing of the (binary) cross-entropy.")
    schedule: Schedule | None = Field(None, description="LR schedule; `type` is plateau, cosine or step.")
    early_stopping: EarlyStoppingSpec | None = Field(None, description="Stop when validation stops improving.")
    validate_every: int = Field(1, gt=0, description="Validate every N epochs (and at the last one).")
    checkpoint_every: int = Field(1, gt=0, description="Checkpoint every N epochs (and at the last one).")
    keep_checkpoints: int = Field(2, gt=0, description="Checkpoints kept: the best K by `monitor`, plus the last.")
    precision: Literal["fp32", "bf16", "fp16"] = Field("fp32", description="Mixed precision on GPU (autocast; "
                                                       "fp16 with gradient scaling). CPU always runs fp32.")
    channels_last: bool = Field(False, description="channels_last memory format on GPU (faster convolutions).")
    compile: bool = Field(False, description="torch.compile the model (first epoch slower, later ones faster).")
    sync_batchnorm: bool = Field(True, description="With more than one GPU worker, synchronize BatchNorm across "
                                 "them (torch's SyncBatchNorm), so that each normalizes over the global batch as one "
                                 "worker would. CPU workers always normalize over their own part of the batch.")
    max_failures: int = Field(3, ge=-1, description="Times Ray Train restarts the worker group after a worker dies "
                              "(a preempted node, an OOM-killed process); it continues from the last checkpoint. "
                              "-1: no limit. A loop running in the driver process (`scaling.in_process`) cannot "
                              "be restarted.")
    seed: int = Field(0, description="Seed of weights init, shuffling and dropout: same seed, same metrics.")
    monitor: str = Field("val/acc", description="Metric that picks the best epoch (and checkpoints, early stopping, "
                         "plateau, Tune by default): `val/loss`, `val/acc`, `val/f1`, or `val/<task>/acc` etc.")
    mode: Mode | None = Field(None, description="Whether `monitor` is better lower or higher; by default `min` for "
                              "losses, `max` otherwise.")

    @field_validator("monitor")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        return check_monitor(value)

    @model_validator(mode="after")
    def _consistent(self) -> "TrainSpec":
        if self.nesterov and not (self.optimizer == "sgd" and self.momentum > 0):
            raise ValueError("nesterov needs optimizer: sgd and momentum > 0")
        return self

    @property
    def monitor_mode(self) -> Mode:
        """`mode`, or the natural direction of `monitor`."""
        return self.mode or metric_mode(self.monitor)

    @property
    def monitors(self) -> dict[str, str]:
        """Every metric this section watches, by the key that names it."""
        watched = {"train.monitor": self.monitor}
        if self.early_stopping and self.early_stopping.monitor:
            watched["train.early_stopping.monitor"] = self.early_stopping.monitor
        if isinstance(self.schedule, PlateauSchedule) and self.schedule.monitor:
            watched["train.schedule.monitor"] = self.schedule.monitor
        return watched
