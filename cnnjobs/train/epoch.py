"""One epoch of training and one pass of evaluation: the seeds' plain PyTorch loop, on the worker's device.

Nothing inside a training step waits for the device: the loss, the tallies and the check for a non-finite loss
stay on the device (`LossWatch`, `Tally`) and are read once per epoch; the live loss for the progress bar is a copy
started every `NOTE_S` seconds and read at the next one, once the device has made it; the data-wait doctor times
the device with events (`StepTimer`); augmentation's draws reach the device without a blocking copy.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import ray.train
import torch
from torch import nn

from cnnjobs.data.pipeline import to_model_input
from cnnjobs.data.shards import Manifest
from cnnjobs.models.heads import task_loss
from cnnjobs.spec import JobSpec
from cnnjobs.train import collectives, seeds
from cnnjobs.train.cache import Batch, Block, SplitCache, blocks_of
from cnnjobs.train.progress import Reporter
from cnnjobs.train.schedules import LrSchedule
from cnnjobs.train.tally import Tally
from cnnjobs.train.timing import StepTimer

NOTE_S = 0.25  # seconds between the live loss notes (and the checks for a non-finite loss)
GPU_PREFETCH = 2  # streamed blocks fetched ahead on a GPU


class StopRequested(Exception):
    """The driver asked the loop (running in its own process) to stop after the current step: Ctrl-C."""


class Diverged(Exception):
    """The loss became NaN or infinite; the message names the epoch and step."""


class OutOfMemory(Exception):
    """A step did not fit in the device's memory; the message says which setting to lower."""


@dataclass
class Trainee:
    """Everything an epoch needs: the model (as trained, `model`, and unwrapped, `plain`), how it learns, the data
    and where it goes. Built once per worker by `loop.setup`."""

    job: JobSpec
    manifest: Manifest
    device: torch.device
    rank: int
    plain: nn.Module
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    schedule: LrSchedule
    augment: Callable[[torch.Tensor, int], torch.Tensor] | None
    mean: torch.Tensor  # (1, C, 1, 1) on the device
    std: torch.Tensor
    amp: torch.dtype | None
    memory_format: torch.memory_format
    batch_size: int  # per worker
    steps: int  # per epoch
    caches: dict[str, SplitCache]
    reporter: Reporter
    stop: threading.Event | None = None  # local mode: set by the driver on Ctrl-C
    timer: StepTimer = field(init=False)

    def __post_init__(self) -> None:
        self.timer = StepTimer(self.device)

    @functools.cached_property  # read every step: built once
    def num_classes(self) -> dict[str, int]:
        return {task: len(classes) for task, classes in self.manifest.tasks.items()}

    @functools.cached_property
    def task_weights(self) -> dict[str, float]:
        return {task: head.weight for task, head in self.job.model.heads.items()}


def batches(t: Trainee, name: str, shuffle_seed: int | None = None) -> Iterator[Batch]:
    """This worker's batches of a split, on its device (see `train/cache.py`): Ray Data's whole blocks, fetched
    ahead (more on a GPU, which must never wait for them)."""
    shard = ray.train.get_dataset_shard(name)
    ahead = GPU_PREFETCH if t.device.type == "cuda" else 1

    def stream() -> Iterator[Block]:
        return blocks_of(shard, t.manifest.image_shape, ahead)

    yield from t.caches[name].batches(stream, t.batch_size, t.device, shuffle_seed)


def forward(t: Trainee, batch: Batch, net: nn.Module, tally: Tally) -> torch.Tensor:
    """The batch's weighted loss, counted in `tally` (on the device)."""
    images = to_model_input(batch["image"], t.mean, t.std).contiguous(memory_format=t.memory_format)
    with torch.autocast(t.device.type, dtype=t.amp) if t.amp else contextlib.nullcontext():
        logits = net(images)
    logits = {task: out.float() for task, out in logits.items()}
    labels = {task: batch[f"label_{task}"] for task in t.num_classes}
    losses = {task: task_loss(out, labels[task], t.job.train.label_smoothing) for task, out in logits.items()}
    tally.add({task: out.detach() for task, out in logits.items()}, labels, losses)
    return sum(t.task_weights.get(task, 1.0) * loss for task, loss in losses.items())


class LossWatch:
    """The epoch's loss sum and its first non-finite loss (step and value), kept on the device. Read without
    waiting: a copy started every `NOTE_S` seconds (into pinned memory on a GPU) is read at the next one, once the
    device has made it; `final` reads it once, at the end of the epoch."""

    def __init__(self, device: torch.device) -> None:
        # total, the first non-finite step (-1: none yet), that step's loss
        self.values = torch.tensor([0.0, -1.0, 0.0], dtype=torch.float64, device=device)
        self.steps = 0
        self.cuda = device.type == "cuda"
        self.copy: tuple[torch.Tensor, Any, int] | None = None  # (host values, CUDA event, steps then)
        self.noted = time.perf_counter()

    def add(self, loss: torch.Tensor, step: int) -> None:
        value = loss.detach().double()
        first = (self.values[1] < 0) & ~torch.isfinite(value)
        self.values = torch.stack([self.values[0] + value, torch.where(first, float(step), self.values[1]),
                                   torch.where(first, value, self.values[2])])
        self.steps = step

    def note(self) -> Reading | None:
        """Every `NOTE_S` seconds: the reading of the last copy that has arrived, and a new copy started; None
        between notes or while the copy is still on its way."""
        if time.perf_counter() - self.noted < NOTE_S:
            return None
        self.noted = time.perf_counter()
        read = None
        if self.copy is not None and (self.copy[1] is None or self.copy[1].query()):
            host, _, steps = self.copy
            read = Reading.of(host, steps)
            self.copy = None
        if self.copy is None:
            if self.cuda:
                host = torch.empty(3, dtype=torch.float64, pin_memory=True)
                host.copy_(self.values, non_blocking=True)
                event = torch.cuda.Event()
                event.record()
                self.copy = (host, event, self.steps)
            else:
                self.copy = (self.values.clone(), None, self.steps)
        return read

    def final(self) -> Reading:
        """The epoch's reading: one read, waiting for the device."""
        return Reading.of(self.values.cpu(), self.steps)


@dataclass(frozen=True)
class Reading:
    """What a `LossWatch` copy says: the mean loss so far, and the first non-finite loss (step 0: none)."""

    loss: float
    bad_step: int
    bad_loss: float

    @classmethod
    def of(cls, values: torch.Tensor, steps: int) -> "Reading":
        total, step, value = values.tolist()
        return cls(total / max(steps, 1), int(step) if step >= 0 else 0, value)

    def check(self, epoch: int) -> None:
        """Raise `Diverged` naming the epoch and step of a non-finite loss."""
        if self.bad_step:
            raise Diverged(f"the loss became {self.bad_loss} at epoch {epoch}, step {self.bad_step}; lower "
                           "train.lr or set train.grad_clip (the last good checkpoint is kept)")


def train_epoch(t: Trainee, epoch: int, limit: int = 0,
                on_step: Callable[[int], None] | None = None) -> Tally:
    """Train one epoch (its first `limit` steps with a limit) and return this worker's tally of it. A non-finite
    loss or running out of memory, which a restart would only repeat, is recorded on the driver's tracker before
    it is raised, so that a restarted worker group returns at once (the training loop's and the plan's probe's)."""
    try:
        return _train_epoch(t, epoch, limit, on_step)
    except (Diverged, OutOfMemory) as error:
        t.reporter.fatal(str(error))
        raise


def _train_epoch(t: Trainee, epoch: int, limit: int, on_step: Callable[[int], None] | None) -> Tally:
    spec = t.job.train
    seeds.seed_everything(seeds.dropout(spec.seed, t.rank, epoch))
    t.model.train()
    tally = Tally(t.num_classes, t.device)
    watch = LossWatch(t.device)
    order = seeds.order(spec.seed, epoch)
    for step, batch in enumerate(t.timer.timed_batches(batches(t, "train", shuffle_seed=order)), 1):
        if t.stop is not None and t.stop.is_set():
            raise StopRequested(f"stopped at epoch {epoch}, step {step}")
        try:
            with t.timer.part("compute"):
                if t.augment is not None:
                    batch["image"] = t.augment(batch["image"], seeds.augment(t.job.data.seed, epoch, t.rank, step))
                t.optimizer.zero_grad(set_to_none=True)
                loss = forward(t, batch, t.model, tally)
                watch.add(loss, step)
                t.scaler.scale(loss).backward()
                if spec.grad_clip:
                    t.scaler.unscale_(t.optimizer)
                    nn.utils.clip_grad_norm_(t.model.parameters(), spec.grad_clip)
                t.scaler.step(t.optimizer)
                t.scaler.update()
                t.schedule.after_batch()
        except (RuntimeError, MemoryError) as exc:
            if not _out_of_memory(exc):
                raise
            raise OutOfMemory(f"out of memory at epoch {epoch}, step {step} on {t.device} "
                              f"({str(exc).splitlines()[0][:80]}): lower train.batch_size (now {spec.batch_size}) "
                              "or data.image_size, or set train.precision: bf16") from None
        noted = watch.note()
        if noted is not None:
            noted.check(epoch)
        if noted is not None or step == 1:  # the first step at once: the driver times the start-up by it
            t.reporter.step(epoch, step, t.steps, noted.loss if noted is not None else None)
        if on_step is not None:
            on_step(step)
        if limit and step >= limit:
            break
    watch.final().check(epoch)  # no epoch with a non-finite loss is validated or checkpointed
    return tally


def evaluate(t: Trainee, name: str, limit: int = 0) -> Tally:
    """This worker's part of a split (its first `limit` batches with a limit), counted; the counts of all workers
    summed, so every worker holds the tally of the whole split."""
    tally = Tally(t.num_classes, t.device)
    collectives.sync_buffers(t.plain)  # BatchNorm statistics: rank 0's, as every worker must score the same model
    t.plain.eval()
    with torch.no_grad():
        for index, batch in enumerate(batches(t, name)):
            if limit and index >= limit:
                break
            forward(t, batch, t.plain, tally)
    with t.timer.part("sync"):
        tally.all_reduce()
    return tally


def _out_of_memory(exc: BaseException) -> bool:
    """CUDA's OutOfMemoryError, or the CPU allocator's failure (a RuntimeError that says so), or MemoryError."""
    text = str(exc)
    return isinstance(exc, (torch.OutOfMemoryError, MemoryError)) or "can't allocate memory" in text or \
        "out of memory" in text.lower()


