"""Where cnnjobs reads and writes: local paths and URIs (s3://, gs://, ...), through pyarrow's filesystems.

Every storage rule lives here, and every read and write of a run folder or a shard cache goes through it:
  - a location is a local path, a `file://` URL, or a URI whose query (`s3://b/p?endpoint_override=...&scheme=http`)
    configures the filesystem and stays at the end of the location when parts are joined onto it;
  - a whole file is written atomically on every storage: locally to a temporary file renamed over the target (a
    crash or a full disk leaves the previous version); on object stores as one PUT, which is atomic there (S3 and
    GCS have no folders to rename: a folder is complete when a marker file written last exists, see
    `upload_folder`);
  - reads and writes on object stores ride out transient errors (a dropped connection, throttling, an endpoint that
    restarts): they are retried for up to `CNNJOBS_STORAGE_RETRY_S` seconds (default 60) before failing with one
    line (`StorageError`);
  - `check` says in one line what is wrong with a location before anything is written: a missing bucket, refused
    credentials, an endpoint that does not answer.

Credentials and endpoints come from the standard chain of the process that touches the storage (for S3:
`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/`AWS_SESSION_TOKEN`, `AWS_PROFILE` and `~/.aws`, an instance profile;
`AWS_ENDPOINT_URL` or `AWS_ENDPOINT_URL_S3` for an S3-compatible server), so every Ray process that reads shards or
writes checkpoints needs them too: see the README, Running on a cluster with S3.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import time
import urllib.parse
from typing import Callable, TypeVar

import pyarrow.fs as pafs

from cnnjobs.errors import JobError

T = TypeVar("T")
RETRY_ENV = "CNNJOBS_STORAGE_RETRY_S"
_REFUSED = ("ACCESS_DENIED", "INVALID_ACCESS_KEY_ID", "SIGNATURE_DOES_NOT_MATCH", "AccessDenied", "InvalidAccessKeyId",
            "SignatureDoesNotMatch")  # pyarrow's and the providers' names for refused credentials
_PERMANENT = (*_REFUSED, "NO_SUCH_BUCKET", "NoSuchBucket")  # not worth retrying


class StorageError(JobError):
    """Storage that cannot be read or written (missing bucket, refused credentials, an endpoint down for longer than
    the retries ride out); the message names the location and what went wrong, in one line."""


def is_uri(location: str) -> bool:
    """True for `scheme://...` locations other than `file://`."""
    return "://" in location and not location.startswith("file://")


def _split(location: str) -> tuple[str, str]:
    """A URI without its query, and the query (with its `?`, or empty)."""
    if is_uri(location) and "?" in location:
        base, query = location.split("?", 1)
        return base, "?" + query
    return location, ""


def resolve(location: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem and the path within it; local paths are expanded and made absolute."""
    if is_uri(location):
        base, query = _split(location)
        scheme, rest = base.split("://", 1)
        bucket, _, key = rest.partition("/")
        # The key is taken literally (spaces, `%`, `#` included): pyarrow reads a URI and decodes its escapes.
        uri = f"{scheme}://{bucket}/{urllib.parse.quote(key, safe='/')}{query}"
        try:
            return pafs.FileSystem.from_uri(uri)
        except (ValueError, OSError) as exc:  # an unknown scheme (ArrowInvalid is a ValueError), a malformed URI
            raise StorageError(f"{location}: not a storage location cnnjobs can use ({_reason(exc)})") from None
    return pafs.LocalFileSystem(), local_path(location)


def local_path(location: str) -> str:
    """A local location as an absolute path (`~` expanded, `file://` removed)."""
    if location.startswith("file://"):
        location = location[len("file://"):]
    return os.path.abspath(os.path.expanduser(location))


def join(location: str, *parts: str) -> str:
    """Join path parts onto a local path or a URI (a URI's query stays at its end)."""
    if not is_uri(location):
        return os.path.join(location, *parts)
    base, query = _split(location)
    return posixpath.join(base, *parts) + query


def parent(location: str) -> str:
    """The folder holding `location`."""
    if not is_uri(location):
        return os.path.dirname(local_path(location))
    base, query = _split(location)
    return base.rstrip("/").rsplit("/", 1)[0] + query


def name(location: str) -> str:
    """The last part of a location (a file or folder name)."""
    return posixpath.basename(_split(location)[0].rstrip("/"))


def endpoint(location: str) -> str:
    """Where a URI's requests go, for messages: its `endpoint_override`, else `AWS_ENDPOINT_URL(_S3)`, else the
    provider's own."""
    query = urllib.parse.parse_qs(_split(location)[1].lstrip("?"))
    found = query.get("endpoint_override", [None])[0] or os.environ.get("AWS_ENDPOINT_URL_S3") or \
        os.environ.get("AWS_ENDPOINT_URL")
    return found or f"{location.split('://', 1)[0]}'s default endpoint"


def retried(what: str, location: str, action: Callable[[], T]) -> T:
    """Run `action`; on an object store retry transient errors with growing pauses for up to
    `CNNJOBS_STORAGE_RETRY_S` seconds, then raise StorageError saying what could not be done where."""
    if not is_uri(location):
        return action()
    deadline = time.monotonic() + float(os.environ.get(RETRY_ENV, "60"))
    pause = 0.5
    while True:
        try:
            return action()
        except FileNotFoundError:
            raise
        except OSError as exc:
            if any(code in str(exc) for code in _PERMANENT) or time.monotonic() + pause > deadline:
                raise StorageError(f"{location}: cannot {what} ({_reason(exc)})") from None
            time.sleep(pause)
            pause = min(pause * 2, 8.0)


def write_bytes(location: str, data: bytes) -> None:
    """Write a whole file, creating its folder, so that a reader sees the old version or the new one, never part.

    Locally: a temporary file renamed over the target (a crash or a full disk leaves the previous version). On an
    object store: one PUT (atomic there), retried (see `retried`)."""
    fs, path = resolve(location)
    if is_uri(location):
        def put() -> None:
            with fs.open_output_stream(path) as out:
                out.write(data)

        retried("write", location, put)
        return
    fs.create_dir(posixpath.dirname(path), recursive=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with fs.open_output_stream(tmp) as out:
            out.write(data)
        fs.move(tmp, path)
    except BaseException:
        if fs.get_file_info(tmp).type != pafs.FileType.NotFound:
            fs.delete_file(tmp)
        raise


def write_text(location: str, text: str) -> None:
    """Write a whole text file, safely (see `write_bytes`)."""
    write_bytes(location, text.encode())


def read_bytes(location: str) -> bytes:
    """Read a whole file (FileNotFoundError when there is none)."""
    fs, path = resolve(location)

    def read() -> bytes:
        with fs.open_input_stream(path) as stream:
            return stream.read()

    return retried("read", location, read)


def read_text(location: str) -> str:
    """Read a whole text file."""
    return read_bytes(location).decode()


def info(location: str) -> pafs.FileInfo:
    """What is at `location` (its type is `NotFound` when nothing is)."""
    fs, path = resolve(location)
    return retried("look up", location, lambda: fs.get_file_info(path))


def exists(location: str) -> bool:
    """Whether a file or folder exists at `location`."""
    return info(location).type != pafs.FileType.NotFound


def is_file(location: str) -> bool:
    """Whether a file exists at `location`."""
    return info(location).type == pafs.FileType.File


def is_dir(location: str) -> bool:
    """Whether a folder exists at `location` (on an object store: any object under that prefix)."""
    return info(location).type == pafs.FileType.Directory


def list_dir(location: str) -> list[pafs.FileInfo]:
    """What a folder holds (not recursively); empty when it does not exist."""
    fs, path = resolve(location)
    selector = pafs.FileSelector(path, allow_not_found=True)
    return retried("list", location, lambda: fs.get_file_info(selector))


def delete_dir(location: str) -> None:
    """Delete a folder and everything in it (nothing happens when it does not exist)."""
    _delete(location, "delete_dir")


def delete_file(location: str) -> None:
    """Delete one file (nothing happens when it does not exist)."""
    _delete(location, "delete_file")


def _delete(location: str, method: str) -> None:
    fs, path = resolve(location)

    def delete() -> None:
        with contextlib.suppress(FileNotFoundError):  # inside the retried call: `retried` re-raises it
            getattr(fs, method)(path)

    retried("delete", location, delete)


def upload_folder(local: str, location: str, last: str) -> None:
    """Copy the local folder `local` (flat: files only) to `location`, each file written whole (`write_bytes`),
    `last` after all the others: a reader that finds `last` finds every file. No folder is renamed (object stores
    have none to rename), so this works the same on every storage."""
    names = sorted(entry for entry in os.listdir(local) if entry != last)
    for entry in [*names, last]:
        with open(os.path.join(local, entry), "rb") as source:
            write_bytes(join(location, entry), source.read())


def check(location: str, where: str) -> None:
    """Refuse, in one line starting with `where` (e.g. `jobs/x.yaml: output.dir`), a URI whose storage cannot be
    used: an unknown scheme, a missing bucket, credentials the storage refuses, an endpoint that does not answer.
    Local paths pass."""
    if not is_uri(location):
        return
    try:
        fs, path = resolve(location)
    except StorageError as exc:
        raise JobError(f"{where}: {exc}") from None
    bucket = path.split("/", 1)[0]
    try:
        found = fs.get_file_info(bucket)  # HeadBucket: answers for the bucket, the credentials and the endpoint
    except OSError as exc:
        if any(code in str(exc) for code in _REFUSED):
            why = ("the storage refused the credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                   "AWS_PROFILE, or give the machine an instance profile with access to the bucket)")
        else:
            why = f"cannot reach {endpoint(location)} ({_reason(exc)})"
        raise JobError(f"{where}: {location}: {why}") from None
    if found.type == pafs.FileType.NotFound:
        raise JobError(f"{where}: {location}: no bucket {bucket!r} at {endpoint(location)}; create it first, or "
                       "fix the name")


def _reason(exc: BaseException) -> str:
    """pyarrow's message, without the operation it names first: `AWS Error X during Y operation: <reason>`."""
    text = str(exc).strip() or exc.__class__.__name__
    text = text.splitlines()[0]
    if "operation: " in text:
        text = text.split("operation: ", 1)[1]
    return text[:160]


def for_ray(location: str) -> tuple[str, pafs.FileSystem | None]:
    """`(storage_path, storage_filesystem)` as Ray Train and Tune take them: for a URI its filesystem (configured by
    its query and the environment) and the path inside it without the scheme (Ray refuses a URI next to a
    filesystem); a local path alone."""
    if not is_uri(location):
        return local_path(location), None
    fs, path = resolve(location)
    return path, fs
