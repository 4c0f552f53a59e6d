"""Downloads: fetched once from a local HTTP server or a file:// URL, checksum verified, extracted safely, reused."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading
import zipfile

import pytest

from cnnjobs.data.download import fetch
from cnnjobs.data.shards import prepare
from cnnjobs.errors import JobError
from cnnjobs.spec import Download
from tests.data.helpers import class_folders, spec


@pytest.fixture
def server(tmp_path):
    """Serve `tmp_path/www` on 127.0.0.1; yields the base URL and the list of paths requested."""
    root = tmp_path / "www"
    root.mkdir()
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            requests.append(self.path)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", root, requests
    httpd.shutdown()


def dataset_zip(tmp_path, target):
    images = class_folders(tmp_path / "src" / "cats_and_dogs_filtered" / "train", per_class=4)
    class_folders(tmp_path / "src" / "cats_and_dogs_filtered" / "validation", per_class=2)
    with zipfile.ZipFile(target, "w") as archive:
        for path in sorted((tmp_path / "src").rglob("*.png")):
            archive.write(path, path.relative_to(tmp_path / "src"))
    assert images.exists()
    return hashlib.sha256(target.read_bytes()).hexdigest()


def test_download_verify_extract_then_reuse(tmp_path, server):
    url, www, requests = server
    digest = dataset_zip(tmp_path, www / "cats_and_dogs_filtered.zip")
    source = {"type": "image_folder", "path": "cats_and_dogs_filtered",
              "download": {"url": f"{url}/cats_and_dogs_filtered.zip", "sha256": digest}}
    manifest, _ = prepare(spec(source, tmp_path / "cache"))
    assert manifest.num_rows("train") == 8 and manifest.num_rows("val") == 4
    assert requests == ["/cats_and_dogs_filtered.zip"]
    again, cached = prepare(spec(source, tmp_path / "cache"))
    assert cached and requests == ["/cats_and_dogs_filtered.zip"]  # nothing fetched the second time


def test_bad_checksum_is_refused_and_nothing_is_kept(tmp_path, server):
    url, www, _ = server
    dataset_zip(tmp_path, www / "d.zip")
    wrong = "0" * 64
    with pytest.raises(JobError, match=f"data.source.download.sha256: .*d.zip has SHA-256 [0-9a-f]{{64}}, "
                                       f"expected {wrong}"):
        fetch(Download(url=f"{url}/d.zip", sha256=wrong), str(tmp_path / "cache"))
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]


def test_zip_with_members_outside_the_folder_is_refused(tmp_path):
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as archive:
        archive.writestr("ok/a.txt", "fine")
        archive.writestr("../../escaped.txt", "gotcha")
    digest = hashlib.sha256(evil.read_bytes()).hexdigest()
    with pytest.raises(JobError, match=r"member '\.\./\.\./escaped\.txt' would be written outside"):
        fetch(Download(url=evil.as_uri(), sha256=digest), str(tmp_path / "cache"))
    assert not list(tmp_path.rglob("escaped.txt"))


def test_file_url_and_a_missing_server(tmp_path):
    digest = dataset_zip(tmp_path, tmp_path / "local.zip")
    folder = fetch(Download(url=(tmp_path / "local.zip").as_uri(), sha256=digest), str(tmp_path / "cache"))
    assert (folder / "cats_and_dogs_filtered" / "train" / "cat" / "cat_0.png").is_file()
    with pytest.raises(JobError, match="data.source.download.url: cannot download http://127.0.0.1:9/x.zip"):
        fetch(Download(url="http://127.0.0.1:9/x.zip"), str(tmp_path / "cache"))


def test_a_failed_download_says_the_jobs_hint(tmp_path, server):
    """A 404 (a moved dataset) names the URL and the job's own advice on where else to get the data."""
    url, _, _ = server
    source = {"type": "image_folder", "path": "cats_and_dogs_filtered", "hint": "unzip it into data/catsdogs",
              "download": {"url": f"{url}/gone.zip"}}
    with pytest.raises(JobError, match=rf"cannot download {url}/gone.zip: HTTP Error 404.*; unzip it into "
                                       r"data/catsdogs$"):
        prepare(spec(source, tmp_path / "cache"))


def test_a_download_into_a_bucket_cache_is_kept_there_for_other_machines(tmp_path, server, s3_server, monkeypatch):
    url, www, requests = server
    digest = dataset_zip(tmp_path, www / "cats_and_dogs_filtered.zip")
    source = {"type": "image_folder", "path": "cats_and_dogs_filtered",
              "download": {"url": f"{url}/cats_and_dogs_filtered.zip", "sha256": digest}}
    cache = s3_server.uri("downloads-cache")
    monkeypatch.setattr("cnnjobs.data.download.LOCAL_CACHE", tmp_path / "machine-1")
    manifest, _ = prepare(spec(source, cache))
    assert manifest.location.startswith(cache) and manifest.num_rows("train") == 8
    assert f"downloads-cache/downloads/{digest[:20]}/cats_and_dogs_filtered.zip" in s3_server.keys("downloads-cache/")
    assert requests == ["/cats_and_dogs_filtered.zip"]
    # Another machine (nothing in its local cache) takes the archive from the bucket, not from the internet.
    monkeypatch.setattr("cnnjobs.data.download.LOCAL_CACHE", tmp_path / "machine-2")
    extracted = fetch(Download(url=f"{url}/cats_and_dogs_filtered.zip", sha256=digest), cache)
    assert str(extracted).startswith(str(tmp_path / "machine-2")) and (extracted / "cats_and_dogs_filtered").is_dir()
    assert requests == ["/cats_and_dogs_filtered.zip"]
