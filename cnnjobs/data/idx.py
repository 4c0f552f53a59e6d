"""MNIST's IDX files (http://yann.lecun.com/exdb/mnist/): big-endian header, then raw uint8 values; gzipped or not."""

from __future__ import annotations

import functools
import gzip
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from cnnjobs.errors import JobError

_IMAGES, _LABELS = 0x0803, 0x0801  # ubyte data, 3 and 1 dimensions


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _header(path: Path, handle, magic: int) -> tuple[int, ...]:
    raw = handle.read(4)
    dims = magic & 0xFF
    if len(raw) < 4 or struct.unpack(">I", raw)[0] != magic:
        kind = "images (magic 2051)" if magic == _IMAGES else "labels (magic 2049)"
        raise JobError(f"data.source.path: {path} is not an MNIST IDX file of {kind}")
    return struct.unpack(f">{dims}I", handle.read(4 * dims))


@functools.lru_cache(maxsize=4)
def idx_array(path: str) -> np.ndarray:
    """The whole IDX file as an array (cached per process: a shard-writing task reads each file once)."""
    file = Path(path)
    with _open(file) as handle:
        magic = _IMAGES if "idx3" in file.name else _LABELS
        shape = _header(file, handle, magic)
        data = np.frombuffer(handle.read(), dtype=np.uint8)
    if data.size != int(np.prod(shape)):
        raise JobError(f"data.source.path: {file} is truncated ({data.size} of {int(np.prod(shape))} values)")
    return data.reshape(shape)


@dataclass(frozen=True)
class IdxImage:
    """One image of an IDX images file."""

    path: str
    index: int

    def __call__(self) -> Image.Image:
        return Image.fromarray(idx_array(self.path)[self.index], mode="L")


def _find(root: Path, prefix: str, kind: str) -> Path:
    """`train-images-idx3-ubyte`, `train-images.idx3-ubyte` (Kaggle's spelling), each optionally `.gz`."""
    dims = "idx3" if kind == "images" else "idx1"
    for name in (f"{prefix}-{kind}-{dims}-ubyte", f"{prefix}-{kind}.{dims}-ubyte"):
        for candidate in (root / name, root / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    raise JobError(f"data.source.path: {root} has no {prefix}-{kind}-{dims}-ubyte[.gz] (the four MNIST IDX files)")


def read_mnist(root: Path) -> tuple[dict[str, tuple[str, np.ndarray]], list[Path]]:
    """{"train": (images file, labels), "test": (...)} and the four files; labels are read, images only checked."""
    parts, files = {}, []
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images, labels = _find(root, prefix, "images"), _find(root, prefix, "labels")
        with _open(images) as handle:
            count = _header(images, handle, _IMAGES)[0]
        values = idx_array(str(labels))
        if count != len(values):
            raise JobError(f"data.source.path: {images.name} has {count} images but {labels.name} "
                           f"has {len(values)} labels")
        parts[split] = (str(images), values)
        files += [images, labels]
    return parts, files
