"""Kept splits: read from Ray Data once, then served in an order that depends only on the epoch's seed, each worker
taking its rows of one permutation of the whole split (as DistributedSampler does)."""

from __future__ import annotations

import torch

from cnnjobs.train.cache import SplitCache

CPU = torch.device("cpu")


def stream_of(rows: int, batch_size: int, calls: list[int | None]):
    """A stand-in for `iter_torch_batches`: rows 0..rows-1 in order, recording each pass's shuffle seed."""
    def stream(seed: int | None):
        calls.append(seed)
        for start in range(0, rows, batch_size):
            ids = torch.arange(start, min(start + batch_size, rows))
            yield {"image": ids.view(-1, 1, 1, 1).repeat(1, 1, 2, 2).to(torch.uint8), "label_label": ids % 3}
    return stream


def ids(cache: SplitCache, stream, seed: int | None, batch_size: int = 4) -> list[int]:
    return torch.cat([b["image"][:, 0, 0, 0].long() for b in cache.batches(stream, batch_size, CPU, seed)]).tolist()


def test_a_kept_split_is_read_once_then_served_by_the_epochs_seed():
    calls: list[int | None] = []
    stream = stream_of(10, 4, calls)
    cache = SplitCache(keep=True)
    first = ids(cache, stream, 1)
    assert calls == [None], "read once, unshuffled: the order must not depend on Ray Data's buffer"
    assert sorted(first) == list(range(10)) and first != list(range(10))
    assert ids(cache, stream, 1) == first and calls == [None], "same seed, same order, from memory"
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


def test_unkept_splits_stream_every_pass_with_the_epochs_seed():
    calls: list[int | None] = []
    stream = stream_of(6, 4, calls)
    streamed = SplitCache(keep=False)
    for seed in (7, 8):
        assert ids(streamed, stream, seed) == list(range(6))  # the stand-in ignores the seed
    assert calls == [7, 8] and streamed.rows is None


def test_an_interrupted_first_pass_is_not_kept():
    calls: list[int | None] = []
    stream = stream_of(10, 4, calls)
    cache = SplitCache(keep=True)

    def broken(seed):
        yield from stream(seed)
        raise RuntimeError("worker lost")

    try:
        ids(cache, broken, 1)
    except RuntimeError:
        pass
    assert cache.rows is None
    assert sorted(ids(cache, stream, 1)) == list(range(10)) and calls == [None, None]
