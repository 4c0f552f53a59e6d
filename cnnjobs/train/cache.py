"""Small splits kept on the worker after their first pass, so later epochs start without Ray Data's fixed costs.

Splits that fit in the object store are materialized once on the driver (`build_datasets`). Even then, starting an
iteration over a Ray Dataset costs ~50 ms and the seeded local shuffle buffer ~40 ms more (BENCHMARKS.md, row 2):
for LeNet-5 on the digits that is as long as the epoch's compute. The first pass streams from Ray Data as usual and
keeps a copy; later passes slice that copy, reshuffled per epoch by a seeded permutation, like a plain PyTorch loop
over tensors in memory. A train split with augmentation is never kept: it must be redrawn every epoch.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator

import torch

Batch = dict[str, torch.Tensor]


class SplitCache:
    """One split's batches: streamed on the first pass, then (when `keep`) served from the worker's memory."""

    def __init__(self, keep: bool) -> None:
        self.keep = keep
        self.rows: Batch | None = None  # every column, all rows of this worker's shard, on the CPU

    def batches(self, stream: Callable[[], Iterable[Batch]], batch_size: int, device: torch.device,
                shuffle_seed: int | None = None) -> Iterator[Batch]:
        """Batches of `batch_size` rows (the last one may be smaller), on `device`.

        `stream()` iterates the split through Ray Data; it is called on the first pass only when the split is kept.
        With `shuffle_seed`, a kept split is reshuffled by `torch.randperm` seeded with it: same seed, same order.
        """
        if self.rows is None:
            parts: list[Batch] = []
            for batch in stream():
                if self.keep:
                    parts.append({name: column.to("cpu") for name, column in batch.items()})
                yield batch
            if self.keep and parts:  # only a finished pass is kept; cat copies out of Ray's shared buffers
                self.rows = {name: torch.cat([part[name] for part in parts]) for name in parts[0]}
                if device.type == "cuda":
                    self.rows = {name: column.pin_memory() for name, column in self.rows.items()}
            return
        count = len(next(iter(self.rows.values())))
        order = None
        if shuffle_seed is not None:
            order = torch.randperm(count, generator=torch.Generator().manual_seed(shuffle_seed))
        for start in range(0, count, batch_size):
            rows = slice(start, start + batch_size) if order is None else order[start:start + batch_size]
            yield {name: column[rows].to(device, non_blocking=True) for name, column in self.rows.items()}
