"""Per-epoch metrics from running sums: loss, accuracy, top-k and macro-F1 per task, and their combination.

A `Tally` adds up batches (losses, a confusion matrix and top-k hits per task) on the device the batches are on,
without reading anything back to the host (on a GPU every read waits for the device to finish its work); the sums
are read once, when the epoch's metrics are asked for. Every metric follows from those sums, so workers add their
tallies together (`all_reduce`) and get the metrics of the whole split.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

from cnnjobs.metrics import TOP_K, macro_f1, metric_name
from cnnjobs.models.heads import predicted_class
from cnnjobs.train import collectives

Flat = TypeVar("Flat", torch.Tensor, np.ndarray)  # the sums in one vector, on the device or read to the host


class Tally:
    """Sums over batches, on `device`, from which losses, accuracies and confusion matrices follow."""

    def __init__(self, num_classes: dict[str, int], device: torch.device | str = "cpu") -> None:
        self.num_classes = dict(num_classes)
        self.tasks = list(num_classes)
        self.top_tasks = [task for task, n in num_classes.items() if n > TOP_K]
        self.loss = torch.zeros(len(self.tasks), dtype=torch.float64, device=device)  # sum of per-example losses
        self.top_hits = torch.zeros(len(self.top_tasks), dtype=torch.float64, device=device)
        self.counts = {task: torch.zeros(n * n, dtype=torch.int64, device=device) for task, n in num_classes.items()}
        self._read: tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]] | None = None

    def add(self, logits: dict[str, torch.Tensor], labels: dict[str, torch.Tensor],
            losses: dict[str, torch.Tensor]) -> None:
        """Count one batch (detached logits and per-task mean losses), on the device: nothing is read back."""
        for index, task in enumerate(self.tasks):
            out, truth, n = logits[task], labels[task], self.num_classes[task]
            pairs = truth * n + predicted_class(out)
            self.counts[task].scatter_add_(0, pairs, torch.ones_like(pairs))  # bincount would read its maximum
            self.loss[index] += losses[task].detach().double() * len(out)
            if task in self.top_tasks:
                top = out.topk(TOP_K, dim=1).indices
                self.top_hits[self.top_tasks.index(task)] += (top == truth[:, None]).any(1).sum()
        self._read = None

    def all_reduce(self) -> None:
        """Sum the tallies of all workers (train metrics cover the whole split, not this worker's part)."""
        if not collectives.distributed():
            return
        self.loss, self.top_hits, counts = self._split(collectives.all_reduce_sum(self._flat()))
        self.counts = {task: flat.round().long() for task, flat in counts.items()}
        self._read = None

    def _flat(self) -> torch.Tensor:
        """Every sum in one float64 tensor (one collective, one copy to the host): losses, top-k hits, counts."""
        return torch.cat([self.loss, self.top_hits, *[c.double() for c in self.counts.values()]])

    def _split(self, flat: Flat) -> tuple[Flat, Flat, dict[str, Flat]]:
        """`_flat`'s pieces back (slices of `flat`, a tensor or an array): losses, hits, each task's flat counts."""
        losses, hits = flat[:len(self.tasks)], flat[len(self.tasks):len(self.tasks) + len(self.top_tasks)]
        offset, counts = len(self.tasks) + len(self.top_tasks), {}
        for task, n in self.num_classes.items():
            counts[task] = flat[offset:offset + n * n]
            offset += n * n
        return losses, hits, counts

    @property
    def confusion(self) -> dict[str, np.ndarray]:
        """task -> (true, predicted) counts."""
        return self._host()[2]

    def _host(self) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """The sums on the host: one copy of everything, the first time they are read after a change."""
        if self._read is None:
            losses, hits, counts = self._split(self._flat().cpu().numpy())
            self._read = (losses, hits, {task: flat.round().astype(np.int64).reshape(self.num_classes[task], -1)
                                         for task, flat in counts.items()})
        return self._read

    def metrics(self, prefix: str, weights: dict[str, float] | None = None) -> dict[str, float]:
        """`<prefix>/<task>/{loss,acc,f1,top5}` per task; `<prefix>/loss` the (weighted) sum of the task losses
        that training minimizes, `<prefix>/acc` and `<prefix>/f1` the means over tasks."""
        losses, hits, confusions = self._host()
        out: dict[str, float] = {}
        for index, task in enumerate(self.tasks):
            confusion = confusions[task]
            count = max(int(confusion.sum()), 1)
            out[metric_name(prefix, "loss", task)] = float(losses[index]) / count
            out[metric_name(prefix, "acc", task)] = float(np.trace(confusion)) / count
            out[metric_name(prefix, "f1", task)] = macro_f1(confusion)
            if task in self.top_tasks:
                out[metric_name(prefix, f"top{TOP_K}", task)] = float(hits[self.top_tasks.index(task)]) / count
        weights = weights or {}
        out[metric_name(prefix, "loss")] = sum(weights.get(t, 1.0) * out[metric_name(prefix, "loss", t)]
                                               for t in self.tasks)
        for kind in ("acc", "f1"):
            out[metric_name(prefix, kind)] = float(np.mean([out[metric_name(prefix, kind, t)] for t in self.tasks]))
        return out
