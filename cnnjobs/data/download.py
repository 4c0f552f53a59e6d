"""Fetching a dataset archive once: download with a progress bar, verify its SHA-256, extract it safely, reuse it.

Layout under `<data.cache_dir>/downloads/<key>/`, where the key is the checksum (or a hash of the URL without one):
    <file name>     the downloaded file, moved into place only once complete and verified
    extracted/      its contents (an archive's members; a plain file is linked here), complete once `.done` exists

The sources read the extracted files from a local disk. With a `data.cache_dir` on object storage (s3://, gs://)
the downloaded file is kept in the bucket (`<cache_dir>/downloads/<key>/<file name>`, so that another machine
fetches it from there instead of from the internet) and extracted into `~/.cache/cnnjobs/downloads/<key>/`
(`$XDG_CACHE_HOME` when set) on the machine that lists the data.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tarfile
import urllib.parse
import urllib.request
import zipfile
import zlib
from pathlib import Path

import pyarrow.fs as pafs

from cnnjobs import storage
from cnnjobs.errors import JobError
from cnnjobs.spec import Download

log = logging.getLogger("cnnjobs")
_CHUNK = 1 << 20
LOCAL_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")) / "cnnjobs"


class DownloadFailed(JobError):
    """The archive could not be fetched (network, server, URL): the job's `data.source.hint` may say what else to do."""


def fetch(download: Download, cache_dir: str) -> Path:
    """The local folder holding the extracted download, fetching and extracting it on first use."""
    key = (download.sha256 or hashlib.sha256(download.url.encode()).hexdigest())[:20].lower()
    remote = storage.is_uri(cache_dir)
    folder = (LOCAL_CACHE if remote else Path(os.path.expanduser(cache_dir))) / "downloads" / key
    extracted = folder / "extracted"
    if (extracted / ".done").exists():
        return extracted
    name = Path(urllib.parse.urlparse(download.url).path).name or "download"
    archive = folder / name
    kept = storage.join(cache_dir, "downloads", key, name)  # the bucket's copy, with a remote cache
    created = [path for path in (folder.parent.parent, folder.parent, folder) if not path.exists()]
    try:
        if not archive.exists():
            folder.mkdir(parents=True, exist_ok=True)
            if remote and storage.is_file(kept):
                _from_bucket(kept, archive, download)
            else:
                _download(download, archive)
                if remote:
                    _to_bucket(archive, kept)
        if extracted.exists():  # an extraction that was interrupted
            shutil.rmtree(extracted)
        extracted.mkdir()
        _extract(archive, extracted)
    except JobError:  # a refused download or archive is not kept, nor the folders made for it
        shutil.rmtree(created[0] if created else folder, ignore_errors=True)
        raise
    (extracted / ".done").touch()
    return extracted


def _to_bucket(archive: Path, kept: str) -> None:
    """Keep the verified download in the cache's bucket (streamed: an archive can be larger than memory)."""
    fs, path = storage.resolve(kept)
    storage.retried("write", kept, lambda: pafs.copy_files(str(archive), path,
                                                           source_filesystem=pafs.LocalFileSystem(),
                                                           destination_filesystem=fs))


def _from_bucket(kept: str, target: Path, download: Download) -> None:
    """The download another machine kept in the cache's bucket, checked against `sha256` as a fresh download is."""
    fs, path = storage.resolve(kept)
    partial = target.with_name(target.name + ".part")
    storage.retried("read", kept, lambda: pafs.copy_files(path, str(partial), source_filesystem=fs,
                                                          destination_filesystem=pafs.LocalFileSystem()))
    if download.sha256 is not None:  # without one there is nothing to check it against
        digest = hashlib.sha256()
        with open(partial, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
        if digest.hexdigest() != download.sha256.lower():
            partial.unlink()
            raise JobError(f"data.source.download.sha256: {kept} has SHA-256 {digest.hexdigest()}, expected "
                           f"{download.sha256.lower()}; delete it so that it is downloaded again from "
                           f"{download.url}")
    partial.rename(target)


def _download(download: Download, target: Path) -> None:
    """Stream `download.url` to `target` through a temporary file, with a progress bar; verify the checksum."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    partial = target.with_name(target.name + ".part")
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(download.url, timeout=60) as response, open(partial, "wb") as out, \
                Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                         TransferSpeedColumn(), transient=True) as progress:
            total = int(response.headers.get("Content-Length") or 0) or None
            task = progress.add_task(f"downloading {target.name}", total=total)
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                digest.update(chunk)
                progress.advance(task, len(chunk))
    except (OSError, ValueError) as exc:  # URLError and HTTPError are OSErrors
        partial.unlink(missing_ok=True)
        raise DownloadFailed(f"data.source.download.url: cannot download {download.url}: {exc}") from None
    actual = digest.hexdigest()
    if download.sha256 is None:
        log.warning("%s is not verified (no data.source.download.sha256); its SHA-256 is %s", download.url, actual)
    elif actual != download.sha256.lower():
        partial.unlink()
        raise JobError(f"data.source.download.sha256: {download.url} has SHA-256 {actual}, "
                       f"expected {download.sha256.lower()} (file removed)")
    partial.rename(target)


def _extract(archive: Path, target: Path) -> None:
    """Unpack a zip or tar into `target`. Every member is checked first: one that would land outside `target`
    (`../x`, an absolute path, a link pointing out) or is not a plain file, folder or link refuses the whole archive
    before anything is written."""
    root = target.resolve()

    def refuse(member: str, problem: str) -> None:
        raise JobError(f"data.source.download: {archive.name}: member {member!r} {problem}; refusing to extract")

    def inside(name: str) -> bool:
        path = (root / name).resolve()
        return path == root or root in path.parents

    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zipped:
                for member in zipped.infolist():
                    if not inside(member.filename):
                        refuse(member.filename, "would be written outside the extraction folder")
                zipped.extractall(root)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tarred:
                for member in tarred.getmembers():
                    # A symbolic link's target is relative to its folder; a hard link's names a member.
                    target_name = os.path.join(os.path.dirname(member.name), member.linkname) \
                        if member.issym() else member.linkname
                    if not inside(member.name):
                        refuse(member.name, "would be written outside the extraction folder")
                    elif (member.issym() or member.islnk()) and not inside(target_name):
                        refuse(member.name, f"links to {member.linkname!r}, outside the extraction folder")
                    elif not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
                        refuse(member.name, "is not a file, folder or link (a device or a pipe)")
                tarred.extractall(root, filter="data")
        else:  # a single file, e.g. train-images-idx3-ubyte.gz
            os.link(archive, root / archive.name)
    except (tarfile.TarError, zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        raise JobError(f"data.source.download: {archive.name}: cannot extract it "
                       f"({exc.__class__.__name__}: {exc})") from None
