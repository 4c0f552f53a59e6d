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


def write_text(location: str, text: str) -> None:
    """Write a whole text file, creating its folder; replaces the file in one step where the filesystem can."""
    fs, path = resolve(location)
    fs.create_dir(posixpath.dirname(path), recursive=True)
    tmp = path + ".tmp"
    with fs.open_output_stream(tmp) as out:
        out.write(text.encode())
    fs.move(tmp, path)


def read_text(location: str) -> str:
    """Read a whole text file."""
    fs, path = resolve(location)
    with fs.open_input_stream(path) as stream:
        return stream.read().decode()


def exists(location: str) -> bool:
    """Whether a file or folder exists at `location`."""
    fs, path = resolve(location)
    return fs.get_file_info(path).type != pafs.FileType.NotFound
