"""A worker's batches of one split, in an order that depends only on the epoch's seed.

Small splits (`build_datasets`) are kept: every worker reads the whole split from Ray Data once, in block order,
and keeps it. Each pass then permutes the whole split with `torch.randperm` seeded by the epoch's seed (the same
permutation on every worker) and the worker takes every `world`-th row from its rank on, as PyTorch's
DistributedSampler does; validation and test are taken the same way, unpermuted, so the workers' parts hold every
row exactly once. Later epochs start without Ray Data's fixed costs (~0.1 s per pass, as long as an epoch of
LeNet-5 on the digits), and a run resumed at epoch k, or restarted after a worker died, sees exactly the batches
an uninterrupted run saw, whatever the number of workers. Larger splits stream from Ray Data every epoch (the
worker's part of a `streaming_split`), shuffled by a local buffer seeded per epoch.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator

import torch

Batch = dict[str, torch.Tensor]


class SplitCache:
    """One split's batches: streamed every pass, or (when `keep`) read once and served from the worker's memory.

    `equal` (training) gives every worker the same number of rows, `len // world`, so that all take the same
    number of steps; without it (evaluation) the parts hold every row once.
    """

    def __init__(self, keep: bool, rank: int = 0, world: int = 1, equal: bool = False) -> None:
        self.keep, self.rank, self.world, self.equal = keep, rank, world, equal
        self.rows: Batch | None = None  # every column, all rows of the split, on the CPU

    def batches(self, stream: Callable[[int | None], Iterable[Batch]], batch_size: int, device: torch.device,
                shuffle_seed: int | None = None) -> Iterator[Batch]:
        """Batches of `batch_size` rows (the last one may be smaller), on `device`.

        `stream(seed)` iterates the split through Ray Data (shuffled by a local buffer when `seed` is given).
        A kept split is streamed once, unshuffled, and then served in `torch.randperm(shuffle_seed)` order (or in
        order without a seed, for evaluation).
        """
        if not self.keep:
            yield from stream(shuffle_seed)
            return
        if self.rows is None:
            parts = [{name: column.to("cpu") for name, column in batch.items()} for batch in stream(None)]
            if not parts:
                return
            # cat copies out of Ray's shared buffers; a pass interrupted above keeps nothing
            self.rows = {name: torch.cat([part[name] for part in parts]) for name in parts[0]}
            if device.type == "cuda":
                self.rows = {name: column.pin_memory() for name, column in self.rows.items()}
        count = len(next(iter(self.rows.values())))
        order = torch.arange(count) if shuffle_seed is None else \
            torch.randperm(count, generator=torch.Generator().manual_seed(shuffle_seed))
        mine = order[self.rank::self.world]
        if self.equal:
            mine = mine[:count // self.world]
        for start in range(0, len(mine), batch_size):
            rows = mine[start:start + batch_size]
            yield {name: column[rows].to(device, non_blocking=True) for name, column in self.rows.items()}
