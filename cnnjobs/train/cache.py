"""A worker's batches of one split, in an order that depends only on the epoch's seed, on the worker's device.

Ray Data hands a worker whole blocks of decoded rows (`iter_batches(batch_size=None)`, NumPy), in the order of the
shard files; this module makes the batches.

Small splits (`build_datasets`) are kept: every worker reads the whole split once, in block order, and keeps it.
Each pass then permutes the whole split with `torch.randperm` seeded by the epoch's seed (the same permutation on
every worker) and the worker takes every `world`-th row from its rank on, as PyTorch's DistributedSampler does;
validation and test are taken the same way, unpermuted, so the workers' parts hold every row exactly once. Later
epochs start without Ray Data's fixed costs, and a run resumed at epoch k, or restarted after a worker died, sees
exactly the batches an uninterrupted run saw, whatever the number of workers.

Larger splits stream from Ray Data every epoch (the worker's part of a `streaming_split`). A training pass
permutes each block's rows with a generator seeded by the epoch's seed and the block's place in the pass, and
batches run across block boundaries: a shuffle within a shard file's worth of rows (the files themselves hold the
split in a seeded random order), at the cost of one gather per batch, where Ray Data's local shuffle buffer cost
most of a small image's pass.

On a GPU a kept split lives in GPU memory when it fits `GPU_SHARE` of the free memory, and batches are gathered
there; otherwise it stays in pinned host memory, each batch is gathered into pinned memory and copied on a side
stream while the previous batch computes. Streamed batches are gathered into pinned memory and copied without
waiting. Either way the host never waits for the device.

A training batch of one row (the last one, when the rows do not divide by the batch size) would break BatchNorm in
training mode (`Expected more than 1 value per channel`): it is folded into the batch before it.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch

from cnnjobs.data.reading import block_view

Batch = dict[str, torch.Tensor]
Block = dict[str, np.ndarray]  # a Ray Data block of decoded rows (`data.reading.block_view`)
_TORCH = {np.dtype(np.uint8): torch.uint8, np.dtype(np.int64): torch.int64, np.dtype(np.int32): torch.int32}
MIN_TRAIN_ROWS = 2  # a training batch never has fewer rows (see the module's docstring)
GPU_SHARE = 0.25  # of the GPU's free memory, for the kept splits' rows


def train_steps(rows: int, batch_size: int) -> int:
    """Training steps over `rows` rows in batches of `batch_size`, a last batch of one row folded in."""
    return len(spans(rows, batch_size, fold=True))


def folds(batch_size: int) -> bool:
    """Whether a last training batch of one row is folded into the one before: not with batches of one row, which
    are all of one row by choice."""
    return batch_size >= MIN_TRAIN_ROWS


def spans(count: int, batch_size: int, fold: bool) -> list[tuple[int, int]]:
    """(start, stop) of each batch over `count` rows; with `fold`, a last batch of one row joins the one before."""
    bounds = [(start, min(start + batch_size, count)) for start in range(0, count, batch_size)]
    if fold and folds(batch_size) and len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < MIN_TRAIN_ROWS:
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


def blocks_of(source: Any, shape: tuple[int, int, int], prefetch: int = 1) -> Iterator[Block]:
    """One pass over a Ray Dataset or a worker's DataIterator, as the blocks `SplitCache` takes: Ray Data's whole
    blocks (`prefetch` fetched ahead), read without a copy (`block_view`)."""
    for block in source.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=prefetch):
        yield block_view(block, shape)


def stream_batches(blocks: Iterable[Block], batch_size: int, device: torch.device,
                   seed: int | None = None) -> Iterator[Batch]:
    """Batches of `batch_size` rows from a pass's blocks, on `device`; with `seed`, each block's rows in an order
    drawn from `seed` and the block's place in the pass. Batches span block boundaries; the last may be smaller."""
    pending: list[tuple[Block, np.ndarray]] = []  # (block, the rows taken from it)
    held = 0
    for index, block in enumerate(blocks):
        count = len(next(iter(block.values())))
        order = np.random.default_rng([seed, index]).permutation(count) if seed is not None else np.arange(count)
        start = 0
        while start < count:
            take = min(batch_size - held, count - start)
            pending.append((block, order[start:start + take]))
            held, start = held + take, start + take
            if held == batch_size:
                yield _gathered(pending, held, device)
                pending, held = [], 0
    if held:
        yield _gathered(pending, held, device)


def _gathered(parts: list[tuple[Block, np.ndarray]], rows: int, device: torch.device) -> Batch:
    """The rows `parts` names, copied into one tensor per column (pinned memory, copied without waiting, on a GPU)."""
    pinned = device.type == "cuda"
    out: Batch = {}
    for name in parts[0][0]:
        first = parts[0][0][name]
        column = torch.empty((rows, *first.shape[1:]), dtype=_TORCH[first.dtype], pin_memory=pinned)
        target, offset = column.numpy(), 0
        for block, index in parts:
            np.take(block[name], index, axis=0, out=target[offset:offset + len(index)])
            offset += len(index)
        out[name] = column.to(device, non_blocking=True) if pinned else column
    return out


class SplitCache:
    """One split's batches: streamed every pass, or (when `keep`) read once and served from the worker's memory.

    `equal` (training) gives every worker the same number of rows, `len // world`, so that all take the same
    number of steps, and folds a last batch of one row; without it (evaluation) the parts hold every row once.
    """

    def __init__(self, keep: bool, rank: int = 0, world: int = 1, equal: bool = False) -> None:
        self.keep, self.rank, self.world, self.equal = keep, rank, world, equal
        self.rows: Batch | None = None  # every column, all rows of the split (on the GPU, or pinned, or the CPU)

    def batches(self, stream: Callable[[], Iterable[Block]], batch_size: int, device: torch.device,
                shuffle_seed: int | None = None) -> Iterator[Batch]:
        """Batches of `batch_size` rows (the last one may be smaller), on `device`.

        `stream()` iterates the split's blocks through Ray Data. A streamed split is shuffled block by block by
        `shuffle_seed` (none: in order, for evaluation); a kept split is streamed once and then served in
        `torch.randperm(shuffle_seed)` order.
        """
        if not self.keep:
            batches = stream_batches(stream(), batch_size, device, shuffle_seed)
            yield from (fold_runts(batches) if self.equal and folds(batch_size) else batches)
            return
        if self.rows is None:
            parts = list(stream())
            if not parts:
                return
            # concatenate copies out of Ray's shared buffers; a pass interrupted above keeps nothing
            self.rows = _placed({name: torch.from_numpy(np.concatenate([part[name] for part in parts]))
                                 for name in parts[0]}, device)
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
