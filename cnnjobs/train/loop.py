"""The loop each Ray Train worker runs: the plain PyTorch loop of the seeds plus the Ray calls that stand out
(`get_dataset_shard`, `prepare_model`, `report`, `get_checkpoint`).

Every worker trains on its own slice of the train split (DDP averages the gradients) and evaluates the whole
validation and test splits, so all workers compute the same validation metrics and take the same decisions
(best epoch, early stopping) without talking to each other.
"""

from __future__ import annotations

import copy
import os
import random
import tempfile
import time
from dataclasses import dataclass
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
from cnnjobs.spec import JobSpec, TrainSpec

MODEL_FILE = "model.pt"
STATE_FILE = "state.pt"
BEST_FILE = "best_model.pt"


@dataclass
class Tally:
    """Sums over batches from which losses, accuracies and confusion matrices follow."""

    loss: dict[str, float]
    confusion: dict[str, np.ndarray]  # task -> (true, predicted) counts

    @classmethod
    def empty(cls, num_classes: dict[str, int]) -> "Tally":
        return cls({t: 0.0 for t in num_classes}, {t: np.zeros((n, n), np.int64) for t, n in num_classes.items()})

    def add(self, logits: dict[str, torch.Tensor], labels: dict[str, torch.Tensor],
            losses: dict[str, torch.Tensor]) -> None:
        for task, out in logits.items():
            n = self.confusion[task].shape[0]
            pairs = labels[task].cpu() * n + out.argmax(1).cpu()
            self.confusion[task] += torch.bincount(pairs, minlength=n * n).reshape(n, n).numpy()
            self.loss[task] += float(losses[task]) * len(out)

    def all_reduce(self) -> None:
        """Sum the tallies of all workers (train metrics cover the whole split, not rank 0's part)."""
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return
        flat = torch.tensor(np.concatenate([[*self.loss.values()], *[c.ravel() for c in self.confusion.values()]]),
                            dtype=torch.float64)
        dist.all_reduce(flat)
        values = flat.numpy()
        offset = len(self.loss)
        for index, task in enumerate(self.loss):
            self.loss[task] = float(values[index])
            size = self.confusion[task].size
            self.confusion[task] = values[offset:offset + size].reshape(self.confusion[task].shape).round().astype(
                np.int64)
            offset += size

    def metrics(self, prefix: str) -> dict[str, float]:
        """`<prefix>/loss` (sum over tasks), `<prefix>/acc` (mean over tasks) and `<prefix>/<task>/...`."""
        out: dict[str, float] = {}
        for task, confusion in self.confusion.items():
            count = max(int(confusion.sum()), 1)
            out[f"{prefix}/{task}/loss"] = self.loss[task] / count
            out[f"{prefix}/{task}/acc"] = float(np.trace(confusion)) / count
        out[f"{prefix}/loss"] = sum(out[f"{prefix}/{t}/loss"] for t in self.loss)
        out[f"{prefix}/acc"] = float(np.mean([out[f"{prefix}/{t}/acc"] for t in self.loss]))
        return out


def make_optimizer(params: Iterator[nn.Parameter], spec: TrainSpec) -> torch.optim.Optimizer:
    """The optimizer named by `train.optimizer`."""
    if spec.optimizer == "sgd":
        return torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)
    if spec.optimizer == "adam":
        return torch.optim.Adam(params, lr=spec.lr, weight_decay=spec.weight_decay)
    return torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay)


def is_better(value: float, best: float | None, mode: str) -> bool:
    """Whether `value` improves on `best` for a metric that is better `mode` ('min' or 'max')."""
    return best is None or (value < best if mode == "min" else value > best)


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

    seed_everything(spec.seed)  # same initial weights on every worker
    num_classes = {task: len(classes) for task, classes in manifest.tasks.items()}
    model = build_model(job.model, num_classes, manifest.image_shape[:2], manifest.image_shape[2])
    model = ray.train.torch.prepare_model(model)
    plain = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    optimizer = make_optimizer(model.parameters(), spec)
    device = ray.train.torch.get_device()
    mean, std = (torch.tensor(v, device=device).view(1, -1, 1, 1) for v in normalization(job.data.normalize,
                                                                                          manifest))
    criterion = nn.CrossEntropyLoss()

    start_epoch, best_score, best_epoch, best_state = 0, None, 0, None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:  # resumed: continue after the last reported epoch
        with checkpoint.as_directory() as folder:
            plain.load_state_dict(torch.load(os.path.join(folder, MODEL_FILE), map_location=device))
            state = torch.load(os.path.join(folder, STATE_FILE), map_location=device, weights_only=False)
            optimizer.load_state_dict(state["optimizer"])
            start_epoch, best_score, best_epoch = state["epoch"], state["best_score"], state["best_epoch"]
            best_path = os.path.join(folder, BEST_FILE)
            best_state = torch.load(best_path, map_location="cpu") if os.path.exists(best_path) else _cpu_copy(plain)
    seed_everything(spec.seed + 1000 * rank + start_epoch)  # distinct dropout/shuffle streams per worker

    train_shard = ray.train.get_dataset_shard("train")
    batch_size = spec.batch_size // world  # train.batch_size is global: same steps whatever the worker count
    steps = -(-(manifest.num_rows("train") // world) // batch_size)

    def batches(name: str, shuffle_seed: int | None = None) -> Iterator[dict[str, torch.Tensor]]:
        shard = train_shard if name == "train" else ray.train.get_dataset_shard(name)
        buffer = max(16 * batch_size, 1024) if shuffle_seed is not None else None
        yield from shard.iter_torch_batches(batch_size=batch_size, device=device,
                                            local_shuffle_buffer_size=buffer, local_shuffle_seed=shuffle_seed)

    def forward(batch: dict[str, torch.Tensor], net: nn.Module, tally: Tally) -> torch.Tensor:
        logits = net(to_model_input(batch["image"], mean, std))
        labels = {task: batch[f"label_{task}"] for task in num_classes}
        losses = {task: criterion(out, labels[task]) for task, out in logits.items()}
        tally.add({t: o.detach() for t, o in logits.items()}, labels, {t: l.detach() for t, l in losses.items()})
        return sum(losses.values())

    def evaluate(name: str, net: nn.Module) -> Tally:
        tally = Tally.empty(num_classes)
        net.eval()
        with torch.no_grad():
            for batch in batches(name):
                forward(batch, net, tally)
        return tally

    for epoch in range(start_epoch, spec.epochs):
        started = time.perf_counter()
        model.train()
        tally = Tally.empty(num_classes)
        last_note = 0.0
        for step, batch in enumerate(batches("train", shuffle_seed=spec.seed + 7919 * epoch + rank), 1):
            optimizer.zero_grad(set_to_none=True)
            loss = forward(batch, model, tally)
            loss.backward()
            optimizer.step()
            if reporter and time.perf_counter() - last_note > 0.25:
                last_note = time.perf_counter()
                reporter.step.remote(epoch + 1, step, steps, float(loss))
        tally.all_reduce()
        metrics = {"epoch": epoch + 1, **tally.metrics("train"), **evaluate("val", plain).metrics("val"),
                   "lr": optimizer.param_groups[0]["lr"], "epoch_s": time.perf_counter() - started}
        if is_better(metrics[spec.monitor], best_score, spec.monitor_mode):
            best_score, best_epoch, best_state = metrics[spec.monitor], epoch + 1, _cpu_copy(plain)
        metrics["best_epoch"] = best_epoch
        if epoch + 1 == spec.epochs and "test" in manifest.files and manifest.num_rows("test"):
            plain.load_state_dict(best_state)
            test = evaluate("test", plain)
            metrics.update(test.metrics("test"))
            metrics["test/confusion"] = {task: c.tolist() for task, c in test.confusion.items()}
        _report(metrics, rank, plain, optimizer, best_score, best_epoch, best_state, reporter)


def _cpu_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().to("cpu", copy=True) for name, tensor in model.state_dict().items()}


def _report(metrics: dict[str, Any], rank: int, model: nn.Module, optimizer: torch.optim.Optimizer,
            best_score: float | None, best_epoch: int, best_state: dict[str, torch.Tensor] | None,
            reporter: Any) -> None:
    """Report the epoch to Ray Train; rank 0 attaches the checkpoint (weights, optimizer, best so far)."""
    if reporter:
        reporter.epoch.remote(copy.deepcopy(metrics))
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = None
        if rank == 0:
            torch.save(model.state_dict(), os.path.join(folder, MODEL_FILE))
            torch.save({"optimizer": optimizer.state_dict(), "epoch": metrics["epoch"], "best_score": best_score,
                        "best_epoch": best_epoch}, os.path.join(folder, STATE_FILE))
            if best_epoch != metrics["epoch"]:
                torch.save(best_state, os.path.join(folder, BEST_FILE))
            checkpoint = ray.train.Checkpoint.from_directory(folder)
        ray.train.report({k: v for k, v in metrics.items() if not isinstance(v, dict)}, checkpoint=checkpoint)
