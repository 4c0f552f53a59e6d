"""Paths that may be local or URIs (s3://, gs://, ...), through pyarrow's filesystems."""

from __future__ import annotations

import os
import posixpath

import pyarrow.fs as pafs


def is_uri(location: str) -> bool:
    """True for `scheme://...` locations other than `file://`."""
    return "://" in location and not location.startswith("file://")


def resolve(location: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem and the path within it; local paths are expanded and made absolute."""
    if is_uri(location):
        return pafs.FileSystem.from_uri(location)
    if location.startswith("file://"):
        location = location[len("file://"):]
    return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(location))


def join(location: str, *parts: str) -> str:
    """Join path parts onto a local path or a URI."""
    return posixpath.join(location, *parts) if is_uri(location) else os.path.join(location, *parts)


def write_bytes(location: str, data: bytes) -> None:
    """Write a whole file, creating its folder: written to a temporary file, then renamed over the old one, so a
    crash or a full disk leaves the previous version intact."""
    fs, path = resolve(location)
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
    """Read a whole file."""
    fs, path = resolve(location)
    with fs.open_input_stream(path) as stream:
        return stream.read()


def read_text(location: str) -> str:
    """Read a whole text file."""
    return read_bytes(location).decode()


def exists(location: str) -> bool:
    """Whether a file or folder exists at `location`."""
    fs, path = resolve(location)
    return fs.get_file_info(path).type != pafs.FileType.NotFound
