"""The loop each Ray Train worker runs: the plain PyTorch loop of the seeds plus the Ray calls that stand out
(`get_dataset_shard` in `epoch.batches`, `prepare_model`, `report`, `get_checkpoint`).

Every worker trains on its part of each epoch's batches (DDP averages the gradients) and evaluates its part of
the validation and test splits; the counts are summed over the workers, so all of them take the same decisions
(best epoch, LR on plateau, early stopping) and call `ray.train.report` equally often. An epoch is a function of
the job's seeds and its number alone (`train/seeds.py`), so a run continued from a checkpoint ends exactly as an
uninterrupted one.
"""

from __future__ import annotations

import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import ray.train
import ray.train.torch
import torch
from torch import nn

from cnnjobs.data.augment import make_augment
from cnnjobs.data.pipeline import normalization
from cnnjobs.data.shards import Manifest
from cnnjobs.metrics import is_better
from cnnjobs.models import build_model
from cnnjobs.run import checkpoints, layout
from cnnjobs.spec import JobSpec
from cnnjobs.train import collectives, seeds
from cnnjobs.train.cache import SplitCache, train_steps
from cnnjobs.train.epoch import Trainee, evaluate, train_epoch
from cnnjobs.train.progress import Reporter
from cnnjobs.train.schedules import LrSchedule, early_stopping, make_optimizer
from cnnjobs.train.timing import PARTS

_AMP = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class LoopConfig:
    """What the driver hands every worker."""

    job: JobSpec
    manifest: Manifest
    progress: Any  # the ProgressTracker actor (None in a search's trials)
    kept: tuple[str, ...]  # splits every worker reads once and keeps (small, materialized)
    run_location: str  # where this run's checkpoints are (and, in local mode, where the loop writes them)
    in_process: bool = False  # Ray Train's local mode: the loop runs in the driver, Ray keeps no checkpoints
    resume: bool = False  # continue from the newest checkpoint in the run folder (`submit --resume`)
    stop: threading.Event | None = None  # local mode: set by the driver on Ctrl-C
    probe_steps: int = 0  # `cnnjobs plan`: time this many steps and validation batches (see `train/probe.py`)
    recorded: list[dict[str, Any]] = field(default_factory=list)  # metrics.csv's rows when resuming (see resumable)


def for_workers(model: nn.Module, job: JobSpec, world: int, on_gpu: bool) -> nn.Module:
    """The model as the workers train it: with more than one GPU worker, every BatchNorm synchronized across them
    (`train.sync_batchnorm`), so that each normalizes over the global batch as one worker would. torch's
    SyncBatchNorm runs on GPUs only: CPU workers normalize over their own part of the batch."""
    if world > 1 and on_gpu and job.train.sync_batchnorm:
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


def setup(cfg: LoopConfig, reporter: Reporter) -> Trainee:
    """The worker's model, optimizer, schedule and data, as every epoch uses them."""
    job, manifest, spec = cfg.job, cfg.manifest, cfg.job.train
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    on_gpu = device.type == "cuda"
    if not on_gpu:  # as many threads as CPUs reserved: Ray gives a worker process that many, the driver has all
        torch.set_num_threads(max(1, int(job.scaling.cpus_per_worker)))
    seeds.seed_everything(seeds.weights(spec.seed))  # the same initial weights on every worker
    num_classes = {task: len(classes) for task, classes in manifest.tasks.items()}
    plain = build_model(job.model, num_classes, manifest.image_shape[:2], manifest.image_shape[2])
    plain = for_workers(plain, job, world, on_gpu)
    memory_format = torch.channels_last if spec.channels_last and on_gpu else torch.contiguous_format
    plain = plain.to(device, memory_format=memory_format)
    optimizer = make_optimizer(plain.parameters(), spec)
    amp = _AMP.get(spec.precision) if on_gpu else None  # CPU autocast is slower than fp32 for convolutions
    mean, std = (torch.tensor(v, device=device).view(1, -1, 1, 1) for v in normalization(job.data.normalize, manifest))
    batch_size = spec.batch_size // world  # train.batch_size is global: same steps whatever the worker count
    steps = train_steps(manifest.num_rows("train") // world, batch_size)
    caches = {name: SplitCache(keep=name in cfg.kept, rank=rank, world=world, equal=name == "train")
              for name in manifest.files}
    return Trainee(job, manifest, device, rank, plain, plain, optimizer,
                   torch.amp.GradScaler("cuda", enabled=amp is torch.float16), LrSchedule(spec, optimizer, steps),
                   make_augment(job.data.augment) if job.data.augment else None, mean, std, amp, memory_format,
                   batch_size, steps, caches, reporter, cfg.stop)


def wrap(t: Trainee) -> None:
    """DDP (with more than one worker) and torch.compile, as the job asks; again when the backbone thaws."""
    model = ray.train.torch.prepare_model(t.plain, move_to_device=False)
    t.model = torch.compile(model) if t.job.train.compile else model


def train_loop(config: dict[str, Any]) -> None:
    """Ray Train entry point; `config["loop"]` is the `LoopConfig`."""
    cfg: LoopConfig = config["loop"]
    job, spec = cfg.job, cfg.job.train
    reporter = Reporter(cfg.progress, ray.train.get_context().get_world_rank())
    if reporter.fatal_error():
        return  # an earlier attempt hit an error that a restart would only repeat (see `train_epoch`)
    reporter.placed(ray.get_runtime_context().get_node_id())
    t = setup(cfg, reporter)
    if cfg.probe_steps:
        from cnnjobs.train.probe import probe

        wrap(t)
        return probe(t, cfg.probe_steps)

    start_epoch, best_score, best_epoch, best_state, last_val = 0, None, 0, None, {}
    best_val_confusion: dict[str, list[list[int]]] = {}  # shown when the job has no test split
    stopper = early_stopping(spec)
    restored, history = _restore(cfg, reporter)  # history: every epoch's row so far, kept in each checkpoint
    if restored is not None:  # continue after the checkpoint's epoch
        state = restored.state
        t.plain.load_state_dict(restored.weights)
        t.optimizer.load_state_dict(state["optimizer"])
        t.schedule.load_state_dict(state["schedule"])
        t.scaler.load_state_dict(state["scaler"])
        if stopper and state["stopper"]:
            stopper.best, stopper.wait = state["stopper"]
        start_epoch, best_score, best_epoch = state["epoch"], state["best_score"], state["best_epoch"]
        last_val, best_val_confusion = state["last_val"], state["best_val_confusion"]
        best_state = restored.best if restored.best is not None else _cpu_copy(t.plain)
        if history and (start_epoch >= spec.epochs or history[-1].get("stopped_early")):
            # Finished already (the driver died before it recorded the end): report the last epoch again, so that
            # whoever follows this run (the driver's tracker, Tune) has its result.
            _report(cfg, {**last_val, **history[-1]}, None, {}, None)
            return

    unfreeze_at = job.model.unfreeze_after
    if unfreeze_at is not None and start_epoch >= unfreeze_at:
        t.plain.freeze_backbone(False)
    wrap(t)
    weights = t.task_weights
    for epoch in range(start_epoch + 1, spec.epochs + 1):
        started = time.perf_counter()
        if epoch - 1 == unfreeze_at:  # transfer learning, phase two: fine-tune everything
            t.plain.freeze_backbone(False)
            wrap(t)
        lr = t.schedule.lr
        tally = train_epoch(t, epoch)
        with t.timer.part("sync"):
            tally.all_reduce()
        metrics: dict[str, Any] = {"epoch": epoch, **tally.metrics("train", weights), "lr": lr}

        last = epoch == spec.epochs
        stop = False
        if last or epoch % spec.validate_every == 0:
            val = evaluate(t, "val")
            last_val = collectives.same_on_all_workers(val.metrics("val", weights))
            metrics.update(last_val)
            if is_better(metrics[spec.monitor], best_score, spec.monitor_mode):
                best_score, best_epoch, best_state = metrics[spec.monitor], epoch, _cpu_copy(t.plain)
                best_val_confusion = {task: c.tolist() for task, c in val.confusion.items()}
            stop = stopper is not None and stopper.update(metrics) >= spec.early_stopping.patience and not last
        t.schedule.after_epoch(metrics)
        save = last or stop or epoch % spec.checkpoint_every == 0
        metrics.update(best_epoch=best_epoch, epoch_s=time.perf_counter() - started)
        metrics.update(_timings(t.timer.take()))
        if stop:
            metrics["stopped_early"] = 1
        this_epoch = _cpu_copy(t.plain) if save and t.rank == 0 else None  # before the best weights come back
        if (last or stop) and cfg.manifest.num_rows("test"):
            t.plain.load_state_dict(best_state)  # the best epoch's weights are the ones tested (and kept)
            test = evaluate(t, "test")
            metrics.update(test.metrics("test", weights))
            metrics["test/confusion"] = {task: c.tolist() for task, c in test.confusion.items()}
        elif last or stop:  # no test split: the best epoch's validation confusion is the one shown
            metrics["val/confusion"] = best_val_confusion
        reporter.epoch(metrics)  # sent as it is now; nothing changes `metrics` after this
        history.append(metrics)
        state = {"optimizer": t.optimizer.state_dict(), "schedule": t.schedule.state_dict(),
                 "scaler": t.scaler.state_dict(), "stopper": (stopper.best, stopper.wait) if stopper else None,
                 "epoch": epoch, "best_score": best_score, "best_epoch": best_epoch, "last_val": last_val,
                 "best_val_confusion": best_val_confusion, "job": job.model_dump(mode="json"), "rows": history}
        # Ray's copy of the metrics carries the latest validation forward, so that Tune and checkpoint ranking
        # always find `train.monitor`; metrics.csv (from the reporter) holds only what was measured this epoch.
        _report(cfg, {**last_val, **metrics}, this_epoch, state, best_state if best_epoch != epoch else None)
        if stop:
            break


def _timings(seconds: dict[str, float]) -> dict[str, float]:
    """The epoch's seconds per part (`time/wait_s`, ...), averaged over the workers, and each worker's when there
    are several (`time/<part>_s/w<rank>`)."""
    table = collectives.gathered(torch.tensor([seconds[part] for part in PARTS], dtype=torch.float64))
    out = {f"time/{part}_s": float(table[:, i].mean()) for i, part in enumerate(PARTS)}
    if len(table) > 1:
        for rank, values in enumerate(table.tolist()):
            out.update({f"time/{part}_s/w{rank}": value for part, value in zip(PARTS, values)})
    return out


def _restore(cfg: LoopConfig, reporter: Reporter) -> tuple[checkpoints.Loaded | None, list[dict[str, Any]]]:
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
    reporter.started(loaded.state["epoch"] if loaded else None, passed, rows)
    return loaded, rows


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
