"""The streamed path of the shards (`split_dataset`: one Ray Data task per shard file, whole blocks to the workers):
what Ray Data does that cnnjobs relies on, every row to exactly one worker, and a streamed run repeating itself."""

from __future__ import annotations

import threading

import numpy as np
import pyarrow.parquet as pq
import pytest

from cnnjobs.data import chunks
from cnnjobs.data.pipeline import build_datasets, split_dataset, warm_up
from cnnjobs.data.reading import block_view
from cnnjobs.data.shards import prepare
from cnnjobs.train.cache import blocks_of
from tests.conftest import seeded_job

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def manifest(ray_cluster, tmp_path_factory):
    """The digits' shards cut into several files per split, as a large dataset's are."""
    job = seeded_job("jobs/digits_lenet.yaml", f"data.cache_dir={tmp_path_factory.mktemp('cache')}")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(chunks, "FILE_BYTES", 256 * 28 * 28)  # at most 256 images per file
        made, _ = prepare(job.data)
    assert len(made.files["train"]) >= 4 and len(made.files["val"]) >= 2
    return made


def stored(manifest, split: str) -> list[int]:
    """The labels of a split's rows, file by file in the manifest's order (a row's identity, with its position)."""
    return [label for path in manifest.paths(split)
            for label in pq.read_table(path, columns=["label_digit"]).column(0).to_pylist()]


def test_a_streamed_pass_is_the_shard_files_rows_in_file_order_every_time(manifest):
    """What cnnjobs relies on in Ray Data (pinned here, so that an upgrade that changes it fails loudly): a
    map over the files' paths with `preserve_order` yields their rows file after file, every pass the same; whole
    blocks (`iter_batches(batch_size=None)`) of the fixed-size binary format read back without a copy."""
    dataset = split_dataset(manifest, "train")
    passes = [[block for block in blocks_of(dataset, manifest.image_shape)] for _ in range(2)]
    for blocks in passes:
        assert np.concatenate([b["label_digit"] for b in blocks]).tolist() == stored(manifest, "train")
        assert all(b["image"].shape[1:] == (1, 28, 28) and b["image"].dtype == np.uint8 for b in blocks)
    assert [len(b["image"]) for b in passes[0]] == [len(b["image"]) for b in passes[1]]
    first = next(iter(dataset.iter_batches(batch_size=None, batch_format="pyarrow")))
    view = block_view(first, manifest.image_shape)["image"]
    assert not view.flags.owndata, "read in place from the block"


def test_every_row_reaches_exactly_one_worker(manifest):
    """Two workers' parts of a streamed split (`streaming_split`, as `train/runner.py` configures it): evaluation
    splits hold every row once; the training split gives both workers as many rows, none twice."""
    from cnnjobs.train.runner import _Ingest, _ingest_options

    data = build_datasets(manifest, in_memory_bytes=0, workers=2)  # every split streams
    assert data.kept == ()
    config = _Ingest(datasets_to_split=list(data.datasets), execution_options=_ingest_options(2))
    parts = config.configure(data.datasets, world_size=2, worker_handles=None, worker_node_ids=None)

    def consume(rank: int, split: str, out: dict) -> None:
        out[rank] = [int(x) for b in blocks_of(parts[rank][split], manifest.image_shape) for x in b["label_digit"]]

    for split in ("val", "train"):
        got: dict[int, list[int]] = {}
        threads = [threading.Thread(target=consume, args=(rank, split, got)) for rank in range(2)]
        for thread in threads:  # a streaming split is consumed by both workers at once
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
        everything = sorted(stored(manifest, split))
        if split == "val":
            assert sorted(got[0] + got[1]) == everything, "every validation row once"
        else:
            assert len(got[0]) == len(got[1]) >= len(everything) // 2 - 1, "as many training rows on both"
            merged = sorted(got[0] + got[1])
            assert all(merged.count(label) <= everything.count(label) for label in set(merged)), "none twice"


def test_a_streamed_run_repeats_itself(manifest, monkeypatch, tmp_path):
    from cnnjobs.train import runner

    monkeypatch.setattr(runner, "IN_MEMORY_SHARE", 0.0)  # every split streams from the shards
    job = seeded_job("jobs/digits_lenet.yaml", "train.epochs=3", f"output.dir={tmp_path}", "scaling.use_gpu=false",
                     f"data.cache_dir={manifest.location.rsplit('/shards/', 1)[0]}")
    first, second = runner.submit(job).summary, runner.submit(job).summary
    assert first.data.shards == manifest.location
    assert first.metrics == second.metrics and first.best_epoch == second.best_epoch
    assert first.metrics["val"].acc > 0.3, "it learns from streamed batches (10 classes: chance is 0.1)"


def test_the_warm_up_runs_a_pipeline_through_the_workers(ray_cluster, caplog):
    """What a new embedded instance runs in the background: a pipeline through a map of `cnnjobs.data.reading`,
    ending without an error (a failure would be logged and the first epoch would pay Ray Data's start instead)."""
    caplog.set_level("INFO", logger="cnnjobs")
    thread = warm_up()
    thread.join(timeout=120)
    assert not thread.is_alive()
    assert "warm-up did not finish" not in caplog.text
