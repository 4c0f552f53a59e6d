"""The shard cache: found without listing the source while its folders are unchanged, never holding a partial read,
and written again when damaged (a file deleted or cut short, the manifest gone), locally and in a bucket."""

from __future__ import annotations

import logging

import pytest

from cnnjobs import storage
from cnnjobs.data import shards
from cnnjobs.data.shards import MANIFEST, plan_shards, prepare
from cnnjobs.errors import JobError
from tests.data.helpers import class_folders, image, spec


@pytest.fixture(params=["local", "s3"])
def cache(request, tmp_path) -> str:
    """A shard cache on the local disk, or in the bucket of the session's S3 server."""
    if request.param == "local":
        return str(tmp_path / "cache")
    return request.getfixturevalue("s3_server").uri("cache", request.node.name.replace("[", "-").strip("]"))


def folder_spec(root, cache_dir: str):
    return spec({"type": "image_folder", "path": str(root)}, cache_dir)


def test_a_listed_file_gone_when_its_shard_is_written_is_an_error_and_nothing_is_cached(tmp_path):
    root = class_folders(tmp_path / "data")
    plan = plan_shards(folder_spec(root, str(tmp_path / "cache")))
    (root / "dog" / "dog_3.png").unlink()  # between the listing and the writing (or on a node that cannot see it)
    with pytest.raises(JobError, match=r"dog_3.png: listed, but not found when its shard was written on"):
        plan.write()
    assert not storage.exists(plan.location), "no shards of a partial read"


def test_the_quick_fingerprint_finds_the_shards_without_listing_the_source(tmp_path, monkeypatch):
    root = class_folders(tmp_path / "data")
    first, cached = prepare(folder_spec(root, str(tmp_path / "cache")))
    assert not cached

    def listing(spec):
        raise AssertionError("the source was listed")

    with monkeypatch.context() as patched:
        patched.setattr(shards, "read_source", listing)
        again, cached = prepare(folder_spec(root, str(tmp_path / "cache")))
    assert cached and again == first
    image(root / "cat" / "cat_new.png")  # a file added changes its folder: listed again, new shards
    grown, cached = prepare(folder_spec(root, str(tmp_path / "cache")))
    assert not cached and grown.location != first.location and grown.num_rows("train") + grown.num_rows("val") \
        + grown.num_rows("test") == 13
    forced, cached = prepare(folder_spec(root, str(tmp_path / "cache")), force=True)  # `data prepare --force`
    assert not cached and forced.location == grown.location


@pytest.mark.parametrize("damage", ["missing file", "cut short", "no manifest"])
def test_a_damaged_cache_entry_is_written_again_from_the_source(damage, cache, tmp_path, caplog):
    root = class_folders(tmp_path / "data")
    job = folder_spec(root, cache)
    first, _ = prepare(job)
    train = first.paths("train")[0]
    if damage == "missing file":
        storage.delete_file(train)
    elif damage == "cut short":
        storage.write_bytes(train, storage.read_bytes(train)[:100])
    else:
        storage.delete_file(storage.join(first.location, MANIFEST))
    with caplog.at_level(logging.WARNING, logger="cnnjobs"):
        again, cached = prepare(job)
    assert not cached and again.location == first.location and again.counts == first.counts
    said = [record.getMessage() for record in caplog.records if "writing it again from the source" in record.msg]
    assert len(said) == 1 and first.location in said[0]
    if damage != "no manifest":
        assert storage.name(train) in said[0]
    assert again.damage() is None


def test_damaged_shards_of_a_parquet_source_are_refused_naming_the_file(cache, tmp_path):
    root = class_folders(tmp_path / "data")
    made, _ = prepare(folder_spec(root, cache))
    storage.delete_file(made.paths("val")[0])
    with pytest.raises(JobError) as refused:
        plan_shards(spec({"type": "parquet", "path": made.location}, str(tmp_path / "other")))
    message = str(refused.value)
    assert message.startswith(f"data.source.path: {made.paths('val')[0]} is missing; these shards are damaged")
    assert "cnnjobs data prepare THEIR_JOB.yaml --force" in message
