"""The loop each Ray Train worker runs: the plain PyTorch loop of the seeds plus the Ray calls that stand out
(`get_dataset_shard`, `prepare_model`, `report`, `get_checkpoint`).

Every worker trains on its part of each epoch's batches (DDP averages the gradients) and evaluates its part of
the validation and test splits; the counts are summed over the workers, so all of them take the same decisions
(best epoch, LR on plateau, early stopping) and call `ray.train.report` equally often. An epoch is a function of
the job's seeds and its number alone (the weights, the order of the batches, dropout and augmentation draws), so
a run continued from a checkpoint ends exactly as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import copy
import random
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import ray.train
import ray.train.torch
import torch
from torch import nn

from cnnjobs.data.augment import augment_seed, make_augment
from cnnjobs.data.pipeline import normalization, to_model_input
from cnnjobs.data.shards import Manifest
from cnnjobs.metrics import is_better
from cnnjobs.models import build_model
from cnnjobs.models.heads import task_loss
from cnnjobs.run import checkpoints, layout
from cnnjobs.spec import JobSpec
from cnnjobs.train.cache import SplitCache
from cnnjobs.train.distributed import gather_timings, same_on_all_workers, sync_buffers
from cnnjobs.train.schedules import LrSchedule, early_stopping, make_optimizer
from cnnjobs.train.tally import Tally
from cnnjobs.train.timing import StepTimer

_AMP = {"bf16": torch.bfloat16, "fp16": torch.float16}


class StopRequested(Exception):
    """The driver asked the loop (running in its own process) to stop after the current step: Ctrl-C."""


class Diverged(Exception):
    """The loss became NaN or infinite; the message names the epoch and step."""


class OutOfMemory(Exception):
    """A step did not fit in the device's memory; the message says which setting to lower."""


@dataclass
class LoopConfig:
    """What the driver hands every worker."""

    job: JobSpec
    manifest: Manifest
    progress: Any  # the ProgressTracker actor rank 0 reports to (None in a search)
    kept: tuple[str, ...]  # splits every worker reads once and keeps (small, materialized)
    run_location: str  # where this run's checkpoints are (and, in local mode, where the loop writes them)
    in_process: bool = False  # Ray Train's local mode: the loop runs in the driver, Ray keeps no checkpoints
    resume: bool = False  # continue from the newest checkpoint in the run folder (`submit --resume`)
    stop: threading.Event | None = None  # local mode: set by the driver on Ctrl-C
    probe_steps: int = 0  # `cnnjobs plan`: time this many steps and validation batches, report, stop
    recorded: list[dict[str, Any]] = field(default_factory=list)  # metrics.csv's rows when resuming (see resumable)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so that a run repeats exactly on one CPU worker."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def train_loop(config: dict[str, Any]) -> None:
    """Ray Train entry point; `config["loop"]` is the `LoopConfig`."""
    cfg: LoopConfig = config["loop"]
    job, manifest, spec = cfg.job, cfg.manifest, cfg.job.train
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    reporter = cfg.progress if rank == 0 else None
    device = ray.train.torch.get_device()
    on_gpu = device.type == "cuda"
    if cfg.progress is not None:
        if ray.get(cfg.progress.fatal_error.remote()):
            return  # an earlier attempt hit an error that a restart would only repeat (see `_fatal`)
        cfg.progress.placed.remote(rank, ray.get_runtime_context().get_node_id())

    if not on_gpu:  # as many threads as CPUs reserved: Ray gives a worker process that many, the driver has all
        torch.set_num_threads(max(1, int(job.scaling.cpus_per_worker)))
    seed_everything(spec.seed)  # same initial weights on every worker
    num_classes = {task: len(classes) for task, classes in manifest.tasks.items()}
    task_weights = {task: head.weight for task, head in job.model.heads.items()}
    plain = build_model(job.model, num_classes, manifest.image_shape[:2], manifest.image_shape[2])
    memory_format = torch.channels_last if spec.channels_last and on_gpu else torch.contiguous_format
    plain = plain.to(device, memory_format=memory_format)
    optimizer = make_optimizer(plain.parameters(), spec)
    amp = _AMP.get(spec.precision) if on_gpu else None  # CPU autocast is slower than fp32 for convolutions
    scaler = torch.amp.GradScaler("cuda", enabled=amp is torch.float16)
    mean, std = (torch.tensor(v, device=device).view(1, -1, 1, 1)
                 for v in normalization(job.data.normalize, manifest))
    augment = make_augment(job.data.augment) if job.data.augment else None
    batch_size = spec.batch_size // world  # train.batch_size is global: same steps whatever the worker count
    steps = -(-(manifest.num_rows("train") // world) // batch_size)
    schedule = LrSchedule(spec, optimizer, steps)
    stopper = early_stopping(spec)

    start_epoch, best_score, best_epoch, best_state, last_val = 0, None, 0, None, {}
    best_val_confusion: dict[str, list[list[int]]] = {}  # shown when the job has no test split
    restored, history = _restore(cfg, reporter)  # history: every epoch's row so far, kept in each checkpoint
    if restored is not None:  # continue after the checkpoint's epoch
        state = restored.state
        plain.load_state_dict(restored.weights)
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        scaler.load_state_dict(state["scaler"])
        if stopper and state["stopper"]:
            stopper.best, stopper.wait = state["stopper"]
        start_epoch, best_score, best_epoch = state["epoch"], state["best_score"], state["best_epoch"]
        last_val, best_val_confusion = state["last_val"], state["best_val_confusion"]
        best_state = restored.best if restored.best is not None else _cpu_copy(plain)

    def wrap(net: nn.Module) -> nn.Module:
        """DDP (with more than one worker) and torch.compile, as the job asks; rebuilt when the backbone thaws."""
        net = ray.train.torch.prepare_model(net, move_to_device=False)
        return torch.compile(net) if spec.compile else net

    unfreeze_at = job.model.unfreeze_after
    if unfreeze_at is not None and start_epoch >= unfreeze_at:
        plain.freeze_backbone(False)
    model = wrap(plain)

    caches = {name: SplitCache(keep=name in cfg.kept, rank=rank, world=world, equal=name == "train")
              for name in manifest.files}
    timer = StepTimer(device)

    def batches(name: str, shuffle_seed: int | None = None) -> Iterator[dict[str, torch.Tensor]]:
        shard = ray.train.get_dataset_shard(name)

        def stream(seed: int | None):
            buffer = max(16 * batch_size, 1024) if seed is not None else None
            return shard.iter_torch_batches(batch_size=batch_size, device=device, local_shuffle_buffer_size=buffer,
                                            local_shuffle_seed=seed)

        yield from caches[name].batches(stream, batch_size, device, shuffle_seed)

    def forward(batch: dict[str, torch.Tensor], net: nn.Module, tally: Tally) -> torch.Tensor:
        images = to_model_input(batch["image"], mean, std).contiguous(memory_format=memory_format)
        with torch.autocast(device.type, dtype=amp) if amp else contextlib.nullcontext():
            logits = net(images)
        logits = {task: out.float() for task, out in logits.items()}
        labels = {task: batch[f"label_{task}"] for task in num_classes}
        losses = {task: task_loss(out, labels[task], spec.label_smoothing) for task, out in logits.items()}
        tally.add({t: o.detach() for t, o in logits.items()}, labels, {t: v.detach() for t, v in losses.items()})
        return sum(task_weights.get(task, 1.0) * loss for task, loss in losses.items())

    def evaluate(name: str, limit: int = 0) -> Tally:
        """This worker's part of a split (its first `limit` batches with a limit), counted; the counts of all
        workers summed."""
        tally = Tally.empty(num_classes)
        sync_buffers(plain)  # BatchNorm statistics: rank 0's, as every worker must score the same model
        plain.eval()
        with torch.no_grad():
            for index, batch in enumerate(batches(name)):
                if limit and index >= limit:
                    break
                forward(batch, plain, tally)
        with timer.part("sync"):
            tally.all_reduce()
        return tally

    for epoch in range(start_epoch + 1, spec.epochs + 1):
        started = time.perf_counter()
        seed_everything(spec.seed + 1000 * rank + epoch)  # dropout: a stream per worker and epoch
        if epoch - 1 == unfreeze_at:  # transfer learning, phase two: fine-tune everything
            plain.freeze_backbone(False)
            model = wrap(plain)
        model.train()
        tally = Tally.empty(num_classes)
        lr = schedule.lr
        last_note = 0.0
        order_seed = spec.seed + 7919 * epoch  # the same on every worker: one permutation of the whole split
        step_ends: list[float] = []  # for `cnnjobs plan`'s probe
        for step, batch in enumerate(timer.timed_batches(batches("train", shuffle_seed=order_seed)), 1):
            if cfg.stop is not None and cfg.stop.is_set():
                raise StopRequested(f"stopped at epoch {epoch}, step {step}")
            try:
                with timer.part("compute"):
                    if augment is not None:
                        gen = torch.Generator().manual_seed(augment_seed(job.data.seed, epoch, rank, step))
                        batch["image"] = augment(batch["image"], gen)
                    optimizer.zero_grad(set_to_none=True)
                    loss = forward(batch, model, tally)
                    value = float(loss.detach())
                    if not np.isfinite(value):
                        _fatal(cfg, Diverged(f"the loss became {value} at epoch {epoch}, step {step}; lower "
                                             "train.lr or set train.grad_clip (the last good checkpoint is kept)"))
                    scaler.scale(loss).backward()
                    if spec.grad_clip:
                        scaler.unscale_(optimizer)
                        nn.utils.clip_grad_norm_(model.parameters(), spec.grad_clip)
                    scaler.step(optimizer)
                    scaler.update()
                    schedule.after_batch()
            except (RuntimeError, MemoryError) as exc:
                if not _out_of_memory(exc):
                    raise
                _fatal(cfg, OutOfMemory(f"out of memory at epoch {epoch}, step {step} on {device} "
                                        f"({str(exc).splitlines()[0][:80]}): lower train.batch_size (now "
                                        f"{spec.batch_size}) or data.image_size, or set train.precision: bf16"))
            if reporter and time.perf_counter() - last_note > 0.25:
                last_note = time.perf_counter()
                reporter.step.remote(epoch, step, steps, value)
            if cfg.probe_steps:
                step_ends.append(time.perf_counter())
                if step == 2:
                    timer.take()  # the first steps warm up (and read a kept split whole): not the steady state
                if step >= cfg.probe_steps:
                    break
        if cfg.probe_steps:
            _probe(cfg, reporter, started, step_ends, timer, lambda: evaluate("val", cfg.probe_steps), device)
            return
        with timer.part("sync"):
            tally.all_reduce()
        metrics: dict[str, Any] = {"epoch": epoch, **tally.metrics("train", task_weights), "lr": lr}

        last = epoch == spec.epochs
        stop = False
        if last or epoch % spec.validate_every == 0:
            val = evaluate("val")
            last_val = same_on_all_workers(val.metrics("val", task_weights))
            metrics.update(last_val)
            if is_better(metrics[spec.monitor], best_score, spec.monitor_mode):
                best_score, best_epoch, best_state = metrics[spec.monitor], epoch, _cpu_copy(plain)
                best_val_confusion = {task: c.tolist() for task, c in val.confusion.items()}
            stop = stopper is not None and stopper.update(metrics) >= spec.early_stopping.patience and not last
        schedule.after_epoch(metrics)
        save = last or stop or epoch % spec.checkpoint_every == 0
        metrics.update(best_epoch=best_epoch, epoch_s=time.perf_counter() - started)
        metrics.update(gather_timings(timer.take()))
        if stop:
            metrics["stopped_early"] = 1
        this_epoch = _cpu_copy(plain) if save and rank == 0 else None  # before the best weights come back
        if (last or stop) and manifest.num_rows("test"):
            plain.load_state_dict(best_state)  # the best epoch's weights are the ones tested (and kept)
            test = evaluate("test")
            metrics.update(test.metrics("test", task_weights))
            metrics["test/confusion"] = {task: c.tolist() for task, c in test.confusion.items()}
        elif last or stop:  # no test split: the best epoch's validation confusion is the one shown
            metrics["val/confusion"] = best_val_confusion
        if reporter:  # waited for: the driver's last poll, once fit() returns, must find this epoch
            ray.get(reporter.epoch.remote(copy.deepcopy(metrics)))
        history.append(copy.deepcopy(metrics))
        state = {"optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                 "scaler": scaler.state_dict(), "stopper": (stopper.best, stopper.wait) if stopper else None,
                 "epoch": epoch, "best_score": best_score, "best_epoch": best_epoch, "last_val": last_val,
                 "best_val_confusion": best_val_confusion, "job": job.model_dump(mode="json"), "rows": history}
        # Ray's copy of the metrics carries the latest validation forward, so that Tune and checkpoint ranking
        # always find `train.monitor`; metrics.csv (from `reporter`) holds only what was measured this epoch.
        best = best_state if best_epoch != epoch else None
        _report(cfg, {**last_val, **metrics}, this_epoch, state, best)
        if stop:
            break


def _restore(cfg: LoopConfig, reporter: Any) -> tuple[checkpoints.Loaded | None, list[dict[str, Any]]]:
    """The checkpoint to continue from, when Ray restarts the worker group after a failure (it then hands over
    its latest) or the driver resumes the run: the newest complete one in the run folder that loads (a damaged one
    passed over, and said so), with the rows of the epochs up to it. Rank 0 tells the tracker where this attempt
    starts and which epochs it keeps."""
    loaded, rows, passed = None, [], []
    if ray.train.get_checkpoint() is not None or cfg.resume:
        loaded, rows, passed = checkpoints.resumable(cfg.run_location, cfg.recorded)
        if loaded is None and not cfg.resume:
            raise checkpoints.CheckpointError("no checkpoint of this run loads" + (": " + "; ".join(passed)
                                                                                     if passed else ""))
    if reporter is not None:
        ray.get(reporter.started.remote(loaded.state["epoch"] if loaded else None, passed, rows))
    return loaded, rows


def _probe(cfg: LoopConfig, reporter: Any, started: float, step_ends: list[float], timer: StepTimer,
           evaluate_some: Any, device: torch.device) -> None:
    """`cnnjobs plan`: the seconds of a training step (after the first two, which warm up), of a validation batch,
    the first batch's wait (a kept split is read whole then), the share waiting for data, peak memory."""
    import resource

    seconds = timer.take()
    durations = np.diff(step_ends)
    # The median step of the probe's second half: the first dozens of steps still warm up (allocator, kernels).
    step_s = float(np.median(durations[len(durations) // 2:])) if len(durations) else step_ends[-1] - started
    validating = time.perf_counter()
    images = int(sum(c.sum() for c in evaluate_some().confusion.values()) // max(len(cfg.manifest.tasks), 1))
    eval_s = time.perf_counter() - validating
    if reporter is None:
        return
    ray.get(reporter.probed.remote({
        "steps": len(step_ends), "step_s": step_s, "first_step_s": step_ends[0] - started if step_ends else None,
        "val_images": images, "val_s": eval_s, **{f"{part}_s": value for part, value in seconds.items()},
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "gpu_bytes": torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None}))


def _out_of_memory(exc: BaseException) -> bool:
    """CUDA's OutOfMemoryError, or the CPU allocator's failure (a RuntimeError that says so), or MemoryError."""
    text = str(exc)
    return isinstance(exc, (torch.OutOfMemoryError, MemoryError)) or "can't allocate memory" in text or \
        "out of memory" in text.lower()


def _fatal(cfg: LoopConfig, error: Exception) -> None:
    """An error a restart would only repeat: recorded on the driver's tracker (so that a restarted worker group
    returns at once instead of failing again) and raised."""
    if cfg.progress is not None:
        ray.get(cfg.progress.fatal.remote(str(error)))
    raise error


def _cpu_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().to("cpu", copy=True) for name, tensor in model.state_dict().items()}


def _report(cfg: LoopConfig, metrics: dict[str, Any], weights: dict[str, torch.Tensor] | None,
            state: dict[str, Any], best: dict[str, torch.Tensor] | None) -> None:
    """Report the epoch to Ray Train; with `weights` (rank 0, checkpoint epochs) attach a checkpoint of it.

    In local mode Ray keeps no checkpoints, so the loop writes it into the run folder itself."""
    scalars = {k: v for k, v in metrics.items() if not isinstance(v, dict)}
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = None
        if weights is not None:
            checkpoints.write(folder, weights, state, best, scalars.get(cfg.job.train.monitor))
            if cfg.in_process:
                checkpoints.persist(folder, cfg.run_location, state["epoch"], cfg.job.train.keep_checkpoints,
                                    cfg.job.train.monitor_mode)
            else:
                checkpoint = ray.train.Checkpoint.from_directory(folder)
        if checkpoint is None:
            ray.train.report(scalars)
        else:  # written into the run folder by checkpoints.persist, the same way as in local mode
            ray.train.report(scalars, checkpoint=checkpoint, checkpoint_dir_name=layout.checkpoint_dir(state["epoch"]),
                             checkpoint_upload_fn=checkpoints.upload_fn(cfg.run_location))
