"""Per-epoch metrics from running sums: loss, accuracy, top-k and macro-F1 per task, and their combination.

A `Tally` adds up batches (losses, a confusion matrix and top-k hits per task); every metric follows from those
sums, so workers can add their tallies together (`all_reduce`) and get the metrics of the whole split.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from cnnjobs.metrics import TOP_K, macro_f1, metric_name
from cnnjobs.models.heads import predicted_class


@dataclass
class Tally:
    """Sums over batches from which losses, accuracies and confusion matrices follow."""

    loss: dict[str, float]
    confusion: dict[str, np.ndarray]  # task -> (true, predicted) counts
    top_hits: dict[str, float]  # task -> examples whose class is among the TOP_K highest logits

    @classmethod
    def empty(cls, num_classes: dict[str, int]) -> "Tally":
        return cls({t: 0.0 for t in num_classes}, {t: np.zeros((n, n), np.int64) for t, n in num_classes.items()},
                   {t: 0.0 for t, n in num_classes.items() if n > TOP_K})

    def add(self, logits: dict[str, torch.Tensor], labels: dict[str, torch.Tensor],
            losses: dict[str, torch.Tensor]) -> None:
        """Count one batch (detached logits and per-task mean losses)."""
        for task, out in logits.items():
            n = self.confusion[task].shape[0]
            truth = labels[task].cpu()
            pairs = truth * n + predicted_class(out).cpu()
            self.confusion[task] += torch.bincount(pairs, minlength=n * n).reshape(n, n).numpy()
            self.loss[task] += float(losses[task]) * len(out)
            if task in self.top_hits:
                top = out.topk(TOP_K, dim=1).indices.cpu()
                self.top_hits[task] += float((top == truth[:, None]).any(1).sum())

    def all_reduce(self) -> None:
        """Sum the tallies of all workers (train metrics cover the whole split, not rank 0's part)."""
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return
        parts = [np.array([*self.loss.values(), *self.top_hits.values()], np.float64),
                 *[c.ravel() for c in self.confusion.values()]]
        flat = torch.tensor(np.concatenate(parts), dtype=torch.float64)
        dist.all_reduce(flat)
        values = flat.numpy()
        sums = iter(values[:len(self.loss) + len(self.top_hits)])
        self.loss = {task: float(next(sums)) for task in self.loss}
        self.top_hits = {task: float(next(sums)) for task in self.top_hits}
        offset = len(self.loss) + len(self.top_hits)
        for task, matrix in self.confusion.items():
            self.confusion[task] = values[offset:offset + matrix.size].reshape(matrix.shape).round().astype(np.int64)
            offset += matrix.size

    def metrics(self, prefix: str, weights: dict[str, float] | None = None) -> dict[str, float]:
        """`<prefix>/<task>/{loss,acc,f1,top5}` per task; `<prefix>/loss` the (weighted) sum of the task losses
        that training minimizes, `<prefix>/acc` and `<prefix>/f1` the means over tasks."""
        out: dict[str, float] = {}
        for task, confusion in self.confusion.items():
            count = max(int(confusion.sum()), 1)
            out[metric_name(prefix, "loss", task)] = self.loss[task] / count
            out[metric_name(prefix, "acc", task)] = float(np.trace(confusion)) / count
            out[metric_name(prefix, "f1", task)] = macro_f1(confusion)
            if task in self.top_hits:
                out[metric_name(prefix, f"top{TOP_K}", task)] = self.top_hits[task] / count
        weights = weights or {}
        tasks = list(self.loss)
        out[metric_name(prefix, "loss")] = sum(weights.get(t, 1.0) * out[metric_name(prefix, "loss", t)]
                                               for t in tasks)
        for kind in ("acc", "f1"):
            out[metric_name(prefix, kind)] = float(np.mean([out[metric_name(prefix, kind, t)] for t in tasks]))
        return out
