"""Parquet shards: what goes in comes out (pixels, labels, counts), once, under a key that tracks the inputs."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from cnnjobs.data.pipeline import decode_images
from cnnjobs.data.shards import Manifest, cache_key, prepare
from cnnjobs.data.sources import assign_splits, read_source
from cnnjobs.spec import DataSpec


def digits_spec(cache_dir, **changes) -> DataSpec:
    raw = {"source": {"type": "builtin", "name": "digits"}, "image_size": 12, "channels": 1,
           "cache_dir": str(cache_dir), **changes}
    return DataSpec.model_validate(raw)


def test_labels_counts_and_pixels_survive_the_round_trip(tmp_path):
    spec = digits_spec(tmp_path)
    manifest, cached = prepare(spec)
    assert not cached
    assert manifest.image_shape == (12, 12, 1)
    assert manifest.tasks == {"digit": [str(i) for i in range(10)]}
    assert sum(manifest.num_rows(s) for s in ("train", "val", "test")) == 1797

    for split in ("train", "val", "test"):
        tables = [pq.read_table(path) for path in manifest.paths(split)]
        labels = [label for table in tables for label in table.column("label_digit").to_pylist()]
        counts = Counter(labels)
        assert [counts[c] for c in range(10)] == manifest.counts[split]["digit"]
        assert all(n > 0 for n in manifest.counts[split]["digit"]), "every class in every split (stratified)"
        # Each file describes itself (shape, classes, its own counts) without the manifest.
        described = [json.loads(pq.read_metadata(path).metadata[b"cnnjobs"]) for path in manifest.paths(split)]
        assert all(d["tasks"] == manifest.tasks and d["image_shape"] == [12, 12, 1] for d in described)
        assert np.sum([d["counts"]["digit"] for d in described], axis=0).tolist() == manifest.counts[split]["digit"]
        assert all(len(raw) == 12 * 12 for raw in tables[0].column("image").to_pylist())

    # The pixels of one stored image are the source image converted and resized.
    table = pq.read_table(manifest.paths("test")[0])
    ref = table.column("ref")[0].as_py()
    example = next(e for e in read_source(spec).examples if e.ref == ref)
    expected = np.asarray(example.load().convert("L").resize((12, 12), Image.Resampling.BILINEAR), np.uint8)
    stored = np.frombuffer(table.column("image")[0].as_py(), np.uint8).reshape(12, 12)
    assert np.array_equal(stored, expected)
    assert 0 < manifest.mean[0] < 1 and 0 < manifest.std[0] < 1


def test_second_prepare_is_a_cache_hit_and_inputs_change_the_key(tmp_path):
    first, _ = prepare(digits_spec(tmp_path))
    again, cached = prepare(digits_spec(tmp_path))
    assert cached and again == first
    assert Manifest.load(first.location) == first
    fingerprint = read_source(digits_spec(tmp_path)).fingerprint
    keys = {cache_key(digits_spec(tmp_path, **change), fingerprint)
            for change in ({}, {"image_size": 16}, {"channels": 3}, {"seed": 1}, {"split": {"val": 0.2}})}
    assert len(keys) == 5
    assert cache_key(digits_spec(tmp_path), fingerprint + "changed") != cache_key(digits_spec(tmp_path), fingerprint)


def test_split_is_seeded_and_stratified(tmp_path):
    examples = read_source(digits_spec(tmp_path)).examples
    one = assign_splits(examples, 0.2, 0.1, seed=3, stratify_task="digit")
    two = assign_splits(examples, 0.2, 0.1, seed=3, stratify_task="digit")
    other = assign_splits(examples, 0.2, 0.1, seed=4, stratify_task="digit")
    refs = {split: [e.ref for e in group] for split, group in one.items()}
    assert refs == {split: [e.ref for e in group] for split, group in two.items()}
    assert refs["val"] != [e.ref for e in other["val"]]
    assert len(one["val"]) == pytest.approx(0.2 * 1797, abs=10)
    assert len(one["test"]) == pytest.approx(0.1 * 1797, abs=10)
    assert not set(refs["train"]) & set(refs["val"]) and not set(refs["val"]) & set(refs["test"])


def test_decode_turns_raw_bytes_into_uint8_nchw():
    images = np.arange(2 * 3 * 4 * 3, dtype=np.uint8).reshape(2, 3, 4, 3)
    batch = pa.table({"image": [img.tobytes() for img in images], "label_x": [1, 2]})
    out = decode_images(batch, (3, 4, 3))
    assert out["image"].shape == (2, 3, 3, 4) and out["image"].dtype == np.uint8
    assert np.array_equal(out["image"][1], images[1].transpose(2, 0, 1))
    assert out["label_x"].tolist() == [1, 2]
    sliced = decode_images(pa.concat_tables([batch, batch]).slice(1, 2), (3, 4, 3))  # offsets into the buffer
    assert np.array_equal(sliced["image"][0], images[1].transpose(2, 0, 1))
    assert np.array_equal(sliced["image"][1], images[0].transpose(2, 0, 1))
