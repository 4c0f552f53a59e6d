"""The loop each Ray Train worker runs: the plain PyTorch loop of the seeds plus the Ray calls that stand out
(`get_dataset_shard`, `prepare_model`, `report`, `get_checkpoint`).

Every worker trains on its own slice of the train split (DDP averages the gradients) and evaluates the whole
validation and test splits; rank 0's validation metrics are broadcast so that all workers take the same
decisions (best epoch, LR on plateau, early stopping) and call `ray.train.report` equally often.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import os
import random
import tempfile
import time
from typing import Any, Iterator

import numpy as np
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from torch import nn

from cnnjobs.data.pipeline import normalization, to_model_input
from cnnjobs.data.shards import Manifest
from cnnjobs.models import build_model
from cnnjobs.models.heads import task_loss
from cnnjobs.metrics import is_better
from cnnjobs.results.files import CHECKPOINT_BEST, CHECKPOINT_MODEL, CHECKPOINT_STATE
from cnnjobs.spec import JobSpec
from cnnjobs.train.cache import SplitCache
from cnnjobs.train.schedules import LrSchedule, early_stopping, make_optimizer
from cnnjobs.train.tally import Tally

_AMP = {"bf16": torch.bfloat16, "fp16": torch.float16}


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so that a run repeats exactly on one CPU worker."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def train_loop(config: dict[str, Any]) -> None:
    """Ray Train entry point; `config` holds the `JobSpec`, the shard `Manifest` and an optional progress actor."""
    job: JobSpec = config["job"]
    manifest: Manifest = config["manifest"]
    progress = config.get("progress")
    spec = job.train
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    reporter = progress if rank == 0 else None
    device = ray.train.torch.get_device()
    on_gpu = device.type == "cuda"

    seed_everything(spec.seed)  # same initial weights on every worker
    num_classes = {task: len(classes) for task, classes in manifest.tasks.items()}
    task_weights = {task: head.weight for task, head in job.model.heads.items()}
    plain = build_model(job.model, num_classes, manifest.image_shape[:2], manifest.image_shape[2])
    memory_format = torch.channels_last if spec.channels_last and on_gpu else torch.contiguous_format
    plain = plain.to(device, memory_format=memory_format)
    optimizer = make_optimizer(plain.parameters(), spec)
    amp = _AMP.get(spec.precision) if on_gpu else None  # CPU autocast is slower than fp32 for convolutions
    scaler = torch.amp.GradScaler("cuda", enabled=amp is torch.float16)
    mean, std = (torch.tensor(v, device=device).view(1, -1, 1, 1) for v in normalization(job.data.normalize,
                                                                                          manifest))
    train_shard = ray.train.get_dataset_shard("train")
    batch_size = spec.batch_size // world  # train.batch_size is global: same steps whatever the worker count
    steps = -(-(manifest.num_rows("train") // world) // batch_size)
    schedule = LrSchedule(spec, optimizer, steps)
    stopper = early_stopping(spec)

    start_epoch, best_score, best_epoch, best_state, last_val = 0, None, 0, None, {}
    best_val_confusion: dict[str, list[list[int]]] = {}  # shown when the job has no test split
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:  # resumed: continue after the last reported epoch
        with checkpoint.as_directory() as folder:
            plain.load_state_dict(torch.load(os.path.join(folder, CHECKPOINT_MODEL), map_location=device))
            state = torch.load(os.path.join(folder, CHECKPOINT_STATE), map_location=device, weights_only=False)
            optimizer.load_state_dict(state["optimizer"])
            schedule.load_state_dict(state["schedule"])
            scaler.load_state_dict(state["scaler"])
            if stopper:
                stopper.best, stopper.wait = state["stopper"]
            start_epoch, best_score, best_epoch = state["epoch"], state["best_score"], state["best_epoch"]
            last_val, best_val_confusion = state["last_val"], state.get("best_val_confusion") or {}
            best_path = os.path.join(folder, CHECKPOINT_BEST)
            best_state = torch.load(best_path, map_location="cpu") if os.path.exists(best_path) else _cpu_copy(plain)
    seed_everything(spec.seed + 1000 * rank + start_epoch)  # distinct dropout/shuffle streams per worker

    def wrap(net: nn.Module) -> nn.Module:
        """DDP (with more than one worker) and torch.compile, as the job asks; rebuilt when the backbone thaws."""
        net = ray.train.torch.prepare_model(net, move_to_device=False)
        return torch.compile(net) if spec.compile else net

    unfreeze_at = job.model.unfreeze_after
    if unfreeze_at is not None and start_epoch >= unfreeze_at:
        plain.freeze_backbone(False)
    model = wrap(plain)

    kept = set(config.get("keep_splits", ()))
    caches = {name: SplitCache(keep=name in kept) for name in manifest.files}

    def batches(name: str, shuffle_seed: int | None = None) -> Iterator[dict[str, torch.Tensor]]:
        shard = train_shard if name == "train" else ray.train.get_dataset_shard(name)
        buffer = max(16 * batch_size, 1024) if shuffle_seed is not None else None
        stream = functools.partial(shard.iter_torch_batches, batch_size=batch_size, device=device,
                                   local_shuffle_buffer_size=buffer, local_shuffle_seed=shuffle_seed)
        yield from caches[name].batches(stream, batch_size, device, shuffle_seed)

    def forward(batch: dict[str, torch.Tensor], net: nn.Module, tally: Tally) -> torch.Tensor:
        images = to_model_input(batch["image"], mean, std).contiguous(memory_format=memory_format)
        with torch.autocast(device.type, dtype=amp) if amp else contextlib.nullcontext():
            logits = net(images)
        logits = {task: out.float() for task, out in logits.items()}
        labels = {task: batch[f"label_{task}"] for task in num_classes}
        losses = {task: task_loss(out, labels[task], spec.label_smoothing) for task, out in logits.items()}
        tally.add({t: o.detach() for t, o in logits.items()}, labels, {t: l.detach() for t, l in losses.items()})
        return sum(task_weights.get(task, 1.0) * loss for task, loss in losses.items())

    def evaluate(name: str) -> Tally:
        tally = Tally.empty(num_classes)
        plain.eval()
        with torch.no_grad():
            for batch in batches(name):
                forward(batch, plain, tally)
        return tally

    for epoch in range(start_epoch + 1, spec.epochs + 1):
        started = time.perf_counter()
        if epoch - 1 == unfreeze_at:  # transfer learning, phase two: fine-tune everything
            plain.freeze_backbone(False)
            model = wrap(plain)
        model.train()
        tally = Tally.empty(num_classes)
        lr = schedule.lr
        last_note = 0.0
        for step, batch in enumerate(batches("train", shuffle_seed=spec.seed + 7919 * epoch + rank), 1):
            optimizer.zero_grad(set_to_none=True)
            loss = forward(batch, model, tally)
            scaler.scale(loss).backward()
            if spec.grad_clip:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), spec.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            schedule.after_batch()
            if reporter and time.perf_counter() - last_note > 0.25:
                last_note = time.perf_counter()
                reporter.step.remote(epoch, step, steps, float(loss))
        tally.all_reduce()
        metrics: dict[str, Any] = {"epoch": epoch, **tally.metrics("train", task_weights), "lr": lr}

        last = epoch == spec.epochs
        stop = False
        if last or epoch % spec.validate_every == 0:
            val = evaluate("val")
            last_val = _same_on_all_workers(val.metrics("val", task_weights))
            metrics.update(last_val)
            if is_better(metrics[spec.monitor], best_score, spec.monitor_mode):
                best_score, best_epoch, best_state = metrics[spec.monitor], epoch, _cpu_copy(plain)
                best_val_confusion = {task: c.tolist() for task, c in val.confusion.items()}
            stop = stopper is not None and stopper.update(metrics) >= spec.early_stopping.patience and not last
        schedule.after_epoch(metrics)
        save = last or stop or epoch % spec.checkpoint_every == 0
        metrics.update(best_epoch=best_epoch, epoch_s=time.perf_counter() - started)
        if stop:
            metrics["stopped_early"] = 1
        this_epoch = _cpu_copy(plain) if save and rank == 0 else None  # before the best weights come back
        if (last or stop) and "test" in manifest.files and manifest.num_rows("test"):
            plain.load_state_dict(best_state)  # the best epoch's weights are the ones tested (and kept)
            test = evaluate("test")
            metrics.update(test.metrics("test", task_weights))
            metrics["test/confusion"] = {task: c.tolist() for task, c in test.confusion.items()}
        elif last or stop:  # no test split: the best epoch's validation confusion is the one shown
            metrics["val/confusion"] = best_val_confusion
        if reporter:
            reporter.epoch.remote(copy.deepcopy(metrics))
        state = {"optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                 "scaler": scaler.state_dict(), "stopper": (stopper.best, stopper.wait) if stopper else None,
                 "epoch": epoch, "best_score": best_score, "best_epoch": best_epoch, "last_val": last_val,
                 "best_val_confusion": best_val_confusion}
        # Ray's copy of the metrics carries the latest validation forward, so that Tune and checkpoint ranking
        # always find `train.monitor`; metrics.csv (from `reporter`) holds only what was measured this epoch.
        _report({**last_val, **metrics}, this_epoch, state, best_state)
        if stop:
            break


def _same_on_all_workers(metrics: dict[str, float]) -> dict[str, float]:
    """Rank 0's values on every worker: GPU kernels may differ in the last bit between workers, and decisions
    taken on validation metrics (best epoch, early stopping) must agree exactly."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return metrics
    values = torch.tensor(list(metrics.values()), dtype=torch.float64)
    if dist.get_backend() == "nccl":
        values = values.cuda()
    dist.broadcast(values, src=0)
    return dict(zip(metrics, values.cpu().tolist()))


def _cpu_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().to("cpu", copy=True) for name, tensor in model.state_dict().items()}


def _report(metrics: dict[str, Any], weights: dict[str, torch.Tensor] | None, state: dict[str, Any],
            best_state: dict[str, torch.Tensor] | None) -> None:
    """Report the epoch to Ray Train; with `weights` (rank 0, checkpoint epochs) attach the epoch's weights,
    the optimizer and schedule state, and the best weights so far."""
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = None
        if weights is not None:
            torch.save(weights, os.path.join(folder, CHECKPOINT_MODEL))
            torch.save(state, os.path.join(folder, CHECKPOINT_STATE))
            if best_state is not None and state["best_epoch"] != state["epoch"]:
                torch.save(best_state, os.path.join(folder, CHECKPOINT_BEST))
            checkpoint = ray.train.Checkpoint.from_directory(folder)
        ray.train.report({k: v for k, v in metrics.items() if not isinstance(v, dict)}, checkpoint=checkpoint)
