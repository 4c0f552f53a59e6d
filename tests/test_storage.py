"""`cnnjobs.storage`: the rules of each storage in one place, locally and on a real S3 server (moto's server mode):
URIs with a query, whole files and folders, retries of an endpoint that drops out, one line when it stays down."""

from __future__ import annotations

import threading
import time

import pyarrow.fs as pafs
import pytest

from cnnjobs import storage
from cnnjobs.errors import JobError


def test_a_uris_query_stays_at_its_end():
    uri = "s3://bkt/runs?endpoint_override=127.0.0.1:9000&scheme=http"
    assert storage.join(uri, "job", "run1") == "s3://bkt/runs/job/run1?endpoint_override=127.0.0.1:9000&scheme=http"
    assert storage.parent(storage.join(uri, "job")) == uri
    assert storage.name(storage.join(uri, "job")) == "job"
    assert storage.endpoint(uri) == "127.0.0.1:9000"
    assert storage.join("/tmp/runs", "a") == "/tmp/runs/a" and storage.parent("/tmp/runs/a") == "/tmp/runs"


def test_ray_gets_the_path_inside_the_filesystem(s3_server):
    path, filesystem = storage.for_ray(s3_server.uri("runs", "job"))
    assert path == f"{s3_server.bucket}/runs/job" and isinstance(filesystem, pafs.S3FileSystem)
    assert storage.for_ray("~/runs") == (storage.local_path("~/runs"), None)


@pytest.fixture(params=["local", "s3"])
def place(request, tmp_path):
    """A folder on the local disk, or in the bucket."""
    if request.param == "local":
        return str(tmp_path / "place")
    return request.getfixturevalue("s3_server").uri("place", request.node.name.replace("[", "-").strip("]"))


def test_whole_files_and_folders(place, tmp_path):
    target = storage.join(place, "sub", "a.txt")
    assert not storage.exists(target)
    storage.write_text(target, "one")
    storage.write_text(target, "two")  # replaced whole
    assert storage.read_text(target) == "two" and storage.is_file(target) and storage.is_dir(storage.join(place, "sub"))
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(storage.join(place, "nothing"))
    local = tmp_path / "folder"
    local.mkdir()
    for name in ("b", "marker", "a"):
        (local / name).write_text(name)
    written = []
    real = storage.write_bytes
    try:
        storage.write_bytes = lambda location, data: (written.append(storage.name(location)), real(location, data))
        storage.upload_folder(str(local), storage.join(place, "up"), last="marker")
    finally:
        storage.write_bytes = real
    assert written[-1] == "marker" and sorted(written) == ["a", "b", "marker"]
    assert sorted(entry.base_name for entry in storage.list_dir(storage.join(place, "up"))) == ["a", "b", "marker"]
    storage.delete_dir(storage.join(place, "up"))
    assert storage.list_dir(storage.join(place, "up")) == [] and storage.exists(target)
    assert [name for name in (entry.base_name for entry in storage.list_dir(storage.join(place, "sub")))
            if ".tmp" in name] == []


def test_an_endpoint_that_drops_out_is_ridden_out_and_one_that_stays_down_is_one_line(s3_server, monkeypatch):
    s3 = s3_server
    location = s3.uri("flaky", "a.txt")
    storage.write_text(location, "kept")
    monkeypatch.setenv(storage.RETRY_ENV, "20")
    s3.stop()
    threading.Timer(1.0, s3.start).start()  # back after a second
    assert storage.read_text(location) == "kept"

    monkeypatch.setenv(storage.RETRY_ENV, "2")
    s3.stop()
    try:
        with pytest.raises(storage.StorageError) as down:
            storage.write_text(location, "lost")
    finally:
        s3.start()
    assert str(down.value).startswith(f"{location}: cannot write (") and "\n" not in str(down.value)
    assert isinstance(down.value, JobError)
    assert storage.read_text(location) == "kept"

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    started = time.monotonic()
    with pytest.raises(storage.StorageError, match="cannot read"):
        storage.read_text(location)
    assert time.monotonic() - started < 2, "refused credentials are not retried"
