"""A worker's batches of one split, in an order that depends only on the epoch's seed, on the worker's device.

Small splits (`build_datasets`) are kept: every worker reads the whole split from Ray Data once, in block order,
and keeps it. Each pass then permutes the whole split with `torch.randperm` seeded by the epoch's seed (the same
permutation on every worker) and the worker takes every `world`-th row from its rank on, as PyTorch's
DistributedSampler does; validation and test are taken the same way, unpermuted, so the workers' parts hold every
row exactly once. Later epochs start without Ray Data's fixed costs (~0.1 s per pass, as long as an epoch of
LeNet-5 on the digits), and a run resumed at epoch k, or restarted after a worker died, sees exactly the batches
an uninterrupted run saw, whatever the number of workers. Larger splits stream from Ray Data every epoch (the
worker's part of a `streaming_split`), shuffled by a local buffer seeded per epoch.

On a GPU a kept split lives in GPU memory when it fits `GPU_SHARE` of the free memory, and batches are gathered
there; otherwise it stays in pinned host memory, each batch is gathered into pinned memory and copied on a side
stream while the previous batch computes. Either way the host never waits for the device.

A training batch of one row (the last one, when the rows do not divide by the batch size) would break BatchNorm in
training mode (`Expected more than 1 value per channel`): it is folded into the batch before it.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator

import torch

Batch = dict[str, torch.Tensor]
MIN_TRAIN_ROWS = 2  # a training batch never has fewer rows (see the module's docstring)
GPU_SHARE = 0.25  # of the GPU's free memory, for the kept splits' rows


def train_steps(rows: int, batch_size: int) -> int:
    """Training steps over `rows` rows in batches of `batch_size`, a last batch of one row folded in."""
    steps = -(-rows // batch_size)
    return steps - 1 if steps > 1 and rows % batch_size == 1 else steps


def spans(count: int, batch_size: int, fold: bool) -> list[tuple[int, int]]:
    """(start, stop) of each batch over `count` rows; with `fold`, a last batch of one row joins the one before."""
    bounds = [(start, min(start + batch_size, count)) for start in range(0, count, batch_size)]
    if fold and len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < MIN_TRAIN_ROWS:
        bounds[-2:] = [(bounds[-2][0], count)]
    return bounds


def fold_runts(batches: Iterable[Batch]) -> Iterator[Batch]:
    """Streamed training batches with a last batch of one row folded into the one before it (a batch is passed
    on once the next one has arrived: only the last one can be short)."""
    held: Batch | None = None
    for batch in batches:
        if held is not None and len(next(iter(batch.values()))) < MIN_TRAIN_ROWS:
            held = {name: torch.cat([held[name], column]) for name, column in batch.items()}
            continue
        if held is not None:
            yield held
        held = batch
    if held is not None:
        yield held


class SplitCache:
    """One split's batches: streamed every pass, or (when `keep`) read once and served from the worker's memory.

    `equal` (training) gives every worker the same number of rows, `len // world`, so that all take the same
    number of steps, and folds a last batch of one row; without it (evaluation) the parts hold every row once.
    """

    def __init__(self, keep: bool, rank: int = 0, world: int = 1, equal: bool = False) -> None:
        self.keep, self.rank, self.world, self.equal = keep, rank, world, equal
        self.rows: Batch | None = None  # every column, all rows of the split (on the GPU, or pinned, or the CPU)

    def batches(self, stream: Callable[[int | None], Iterable[Batch]], batch_size: int, device: torch.device,
                shuffle_seed: int | None = None) -> Iterator[Batch]:
        """Batches of `batch_size` rows (the last one may be smaller), on `device`.

        `stream(seed)` iterates the split through Ray Data (shuffled by a local buffer when `seed` is given).
        A kept split is streamed once, unshuffled, and then served in `torch.randperm(shuffle_seed)` order (or in
        order without a seed, for evaluation).
        """
        if not self.keep:
            yield from (fold_runts(stream(shuffle_seed)) if self.equal else stream(shuffle_seed))
            return
        if self.rows is None:
            parts = [{name: column.to("cpu") for name, column in batch.items()} for batch in stream(None)]
            if not parts:
                return
            # cat copies out of Ray's shared buffers; a pass interrupted above keeps nothing
            self.rows = _placed({name: torch.cat([part[name] for part in parts]) for name in parts[0]}, device)
        count = len(next(iter(self.rows.values())))
        order = torch.arange(count) if shuffle_seed is None else \
            torch.randperm(count, generator=torch.Generator().manual_seed(shuffle_seed))
        mine = order[self.rank::self.world]
        if self.equal:
            mine = mine[:count // self.world]
        bounds = spans(len(mine), batch_size, fold=self.equal)
        where = next(iter(self.rows.values())).device
        if where.type == device.type:  # gathered where the rows are: the CPU, or the GPU itself
            mine = mine.to(where)  # once per pass
            for start, stop in bounds:
                yield {name: column.index_select(0, mine[start:stop]) for name, column in self.rows.items()}
        else:
            yield from _staged(self.rows, mine, bounds, device)


def _placed(rows: Batch, device: torch.device) -> Batch:
    """Where a kept split's rows live: on the GPU when they fit `GPU_SHARE` of its free memory, else in pinned
    host memory (copied from there without waiting); on the CPU as they are."""
    if device.type != "cuda":
        return rows
    size = sum(column.numel() * column.element_size() for column in rows.values())
    free, _ = torch.cuda.mem_get_info(device)
    if size <= GPU_SHARE * free:
        return {name: column.to(device) for name, column in rows.items()}
    return {name: column.pin_memory() for name, column in rows.items()}


def _staged(rows: Batch, mine: torch.Tensor, bounds: list[tuple[int, int]], device: torch.device) -> Iterator[Batch]:
    """Batches gathered into pinned memory on the host and copied to the GPU on a side stream: the copy of one
    batch runs while the one before computes, and the compute stream waits for it on the device, not the host.
    (Indexing a pinned tensor gives pageable memory, whose copy would block: the gather writes into pinned memory.)"""
    copier = torch.cuda.Stream(device)
    for start, stop in bounds:
        index = mine[start:stop]
        staged = {name: torch.empty((len(index), *column.shape[1:]), dtype=column.dtype, pin_memory=True)
                  for name, column in rows.items()}
        for name, column in rows.items():
            torch.index_select(column, 0, index, out=staged[name])
        with torch.cuda.stream(copier):
            batch = {name: column.to(device, non_blocking=True) for name, column in staged.items()}
        compute = torch.cuda.current_stream(device)
        compute.wait_stream(copier)
        for column in batch.values():
            column.record_stream(compute)  # freed only once the compute stream is done with it
        yield batch
