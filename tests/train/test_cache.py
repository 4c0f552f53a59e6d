"""Kept splits: read from Ray Data once, then served in an order that depends only on the epoch's seed, each worker
taking its rows of one permutation of the whole split (as DistributedSampler does)."""

from __future__ import annotations

import numpy as np
import torch

from cnnjobs.train.cache import SplitCache

CPU = torch.device("cpu")


def stream_of(rows: int, block_rows: int, calls: list[int]):
    """A stand-in for Ray Data's blocks (`iter_batches(batch_size=None)`): rows 0..rows-1 in order, in blocks of
    `block_rows`, counting the passes."""
    def stream():
        calls.append(1)
        for start in range(0, rows, block_rows):
            ids = np.arange(start, min(start + block_rows, rows))
            yield {"image": np.repeat(ids.reshape(-1, 1, 1, 1), 4, axis=3).astype(np.uint8).reshape(-1, 1, 2, 2),
                   "label_label": ids % 3}
    return stream


def ids(cache: SplitCache, stream, seed: int | None, batch_size: int = 4) -> list[int]:
    return torch.cat([b["image"][:, 0, 0, 0].long() for b in cache.batches(stream, batch_size, CPU, seed)]).tolist()


def test_a_kept_split_is_read_once_then_served_by_the_epochs_seed():
    calls: list[int] = []
    stream = stream_of(10, 4, calls)
    cache = SplitCache(keep=True)
    first = ids(cache, stream, 1)
    assert calls == [1], "read once"
    assert sorted(first) == list(range(10)) and first != list(range(10))
    assert ids(cache, stream, 1) == first and calls == [1], "same seed, same order, from memory"
    assert ids(cache, stream, 2) != first
    # A fresh worker (a resumed run, a restarted worker group) serves epoch 2 exactly as this one does.
    assert ids(SplitCache(keep=True), stream_of(10, 4, []), 2) == ids(cache, stream, 2)
    for batch in cache.batches(stream, 4, CPU, 3):  # labels travel with their images
        assert torch.equal(batch["label_label"], batch["image"][:, 0, 0, 0].long() % 3)
    assert [len(b["image"]) for b in cache.batches(stream, 4, CPU, 3)] == [4, 4, 2]


def test_workers_take_their_rows_of_one_permutation():
    one = ids(SplitCache(keep=True), stream_of(10, 4, []), 5, batch_size=10)
    parts = [ids(SplitCache(keep=True, rank=r, world=2, equal=True), stream_of(10, 4, []), 5, batch_size=10)
             for r in range(2)]
    assert parts == [one[0::2], one[1::2]], "two workers split the one permutation one worker would see"
    odd = [ids(SplitCache(keep=True, rank=r, world=3, equal=True), stream_of(10, 4, []), 5) for r in range(3)]
    assert [len(p) for p in odd] == [3, 3, 3], "training: the same number of rows (and steps) on every worker"
    evaluation = [ids(SplitCache(keep=True, rank=r, world=3), stream_of(10, 4, []), None) for r in range(3)]
    assert sorted(sum(evaluation, [])) == list(range(10)), "evaluation: every row exactly once"


def test_streamed_splits_are_read_every_pass_and_shuffled_block_by_block_by_the_epochs_seed():
    calls: list[int] = []
    stream = stream_of(10, 4, calls)
    streamed = SplitCache(keep=False)
    one, again, other = ids(streamed, stream, 7), ids(streamed, stream, 7), ids(streamed, stream, 8)
    assert calls == [1, 1, 1] and streamed.rows is None, "read every pass, nothing kept"
    assert one == again and one != other, "the same batches for the same seed, others for another epoch"
    assert sorted(one) == list(range(10)), "every row once per pass"
    assert [sorted(one[i:i + 4]) for i in (0, 4)] == [[0, 1, 2, 3], [4, 5, 6, 7]], "each block's rows shuffled"
    assert ids(streamed, stream, None) == list(range(10)), "evaluation: in order"
    sizes = [len(b["image"]) for b in streamed.batches(stream_of(10, 3, []), 4, CPU, 7)]
    assert sizes == [4, 4, 2], "batches run across block boundaries"
    for batch in streamed.batches(stream, 4, CPU, 9):  # labels travel with their images
        assert torch.equal(batch["label_label"], batch["image"][:, 0, 0, 0].long() % 3)
    trained = SplitCache(keep=False, equal=True)
    assert [len(b["image"]) for b in trained.batches(stream_of(9, 4, []), 4, CPU, 7)] == [4, 5], "no runt"


def test_an_interrupted_first_pass_is_not_kept():
    calls: list[int] = []
    stream = stream_of(10, 4, calls)
    cache = SplitCache(keep=True)

    def broken():
        yield from stream()
        raise RuntimeError("worker lost")

    try:
        ids(cache, broken, 1)
    except RuntimeError:
        pass
    assert cache.rows is None
    assert sorted(ids(cache, stream, 1)) == list(range(10)) and calls == [1, 1]
