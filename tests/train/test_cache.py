"""Small splits kept on the worker: first pass streamed, later passes from memory, reshuffled by a seed."""

from __future__ import annotations

import torch

from cnnjobs.train.cache import SplitCache

CPU = torch.device("cpu")


def stream_of(rows: int, batch_size: int, calls: list[int]):
    """A stand-in for `iter_torch_batches`: rows 0..rows-1 in order, counting how often it is started."""
    def stream():
        calls.append(1)
        for start in range(0, rows, batch_size):
            ids = torch.arange(start, min(start + batch_size, rows))
            yield {"image": ids.view(-1, 1, 1, 1).repeat(1, 1, 2, 2).to(torch.uint8), "label_label": ids % 3}
    return stream


def test_a_kept_split_streams_once_then_reshuffles_from_memory_by_seed():
    calls: list[int] = []
    stream = stream_of(10, 4, calls)
    cache = SplitCache(keep=True)
    first = [batch["image"][:, 0, 0, 0].long() for batch in cache.batches(stream, 4, CPU, shuffle_seed=1)]
    assert [len(b) for b in first] == [4, 4, 2] and calls == [1]
    again = [b["image"][:, 0, 0, 0].long() for b in cache.batches(stream, 4, CPU, shuffle_seed=2)]
    assert calls == [1]  # served from memory: Ray Data is not started again
    assert [len(b) for b in again] == [4, 4, 2]  # the same steps per epoch as the streamed pass
    assert sorted(torch.cat(again).tolist()) == list(range(10))  # every row once
    assert torch.cat(again).tolist() != list(range(10))  # reshuffled
    same = [b["image"][:, 0, 0, 0].long() for b in cache.batches(stream, 4, CPU, shuffle_seed=2)]
    assert torch.equal(torch.cat(same), torch.cat(again))  # same seed, same order: runs repeat themselves
    other = [b["image"][:, 0, 0, 0].long() for b in cache.batches(stream, 4, CPU, shuffle_seed=3)]
    assert not torch.equal(torch.cat(other), torch.cat(again))
    for batch in cache.batches(stream, 4, CPU, shuffle_seed=4):  # labels travel with their images
        assert torch.equal(batch["label_label"], batch["image"][:, 0, 0, 0].long() % 3)


def test_evaluation_order_is_kept_and_unkept_splits_stream_every_time():
    calls: list[int] = []
    stream = stream_of(6, 4, calls)
    kept = SplitCache(keep=True)
    for _ in range(3):
        assert torch.cat([b["image"][:, 0, 0, 0] for b in kept.batches(stream, 4, CPU)]).tolist() == list(range(6))
    assert calls == [1]
    streamed = SplitCache(keep=False)
    for _ in range(3):
        list(streamed.batches(stream, 4, CPU, shuffle_seed=0))
    assert calls == [1, 1, 1, 1] and streamed.rows is None


def test_an_interrupted_first_pass_is_not_kept():
    calls: list[int] = []
    stream = stream_of(10, 4, calls)
    cache = SplitCache(keep=True)
    next(iter(cache.batches(stream, 4, CPU)))  # e.g. an exception in the first step
    assert cache.rows is None
    assert len(torch.cat([b["image"] for b in cache.batches(stream, 4, CPU)])) == 10 and calls == [1, 1]
