"""Parquet shards: the dataset written once, resized, as raw pixels, plus a manifest that describes it.

Layout of one cached dataset, `<cache_dir>/shards/<key>/`:
    train-00000.parquet ...   columns `image` (H*W*C uint8 bytes, row-major HWC), `label_<task>` (int64), `ref`
    val-00000.parquet ...
    test-00000.parquet ...
    dataset.json              the manifest, written last: its presence marks a complete cache entry

Raw pixels (zstd-compressed by Parquet) make decoding per epoch a reshape instead of a JPEG/PNG decode.
Image shape, class names and counts are also in each file's Parquet metadata (key `cnnjobs`), so a shard file
describes itself without the manifest.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from dataclasses import asdict, dataclass
from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from cnnjobs import storage
from cnnjobs.data.sources import SPLITS, Example, assign_splits, read_source
from cnnjobs.errors import JobError
from cnnjobs.spec import DataSpec

FORMAT_VERSION = 1
MANIFEST = "dataset.json"
_ROW_GROUP = 512
_FILE_BYTES = 64 * 2**20  # target size of one shard file before compression


@dataclass(frozen=True)
class Manifest:
    """What the shards hold: image shape, tasks with class names, per-split counts, files and pixel statistics."""

    location: str
    key: str
    image_shape: tuple[int, int, int]  # height, width, channels
    tasks: dict[str, list[str]]
    counts: dict[str, dict[str, list[int]]]  # split -> task -> images per class
    files: dict[str, list[str]]  # split -> file names relative to `location`
    mean: list[float]  # per channel, on the 0-1 scale, measured on the train split
    std: list[float]

    def num_rows(self, split: str) -> int:
        """Images in `split`."""
        first_task = next(iter(self.tasks))
        return sum(self.counts[split][first_task])

    def paths(self, split: str) -> list[str]:
        """Full paths (or URIs) of the shard files of `split`."""
        return [storage.join(self.location, name) for name in self.files[split]]

    @classmethod
    def load(cls, location: str) -> "Manifest":
        """Read the manifest of a shard folder."""
        raw = json.loads(storage.read_text(storage.join(location, MANIFEST)))
        raw["location"] = location
        raw["image_shape"] = tuple(raw["image_shape"])
        return cls(**raw)


def cache_key(spec: DataSpec, fingerprint: str) -> str:
    """Changes whenever the source, its files, or the preprocessing baked into the shards change."""
    baked = {
        "format": FORMAT_VERSION,
        "source": spec.source.model_dump(mode="json"),
        "fingerprint": fingerprint,
        "image_size": list(spec.image_size),
        "channels": spec.channels,
        "split": spec.split.model_dump(mode="json"),
        "seed": spec.seed,
    }
    return hashlib.sha256(json.dumps(baked, sort_keys=True).encode()).hexdigest()[:20]


def prepare(spec: DataSpec) -> tuple[Manifest, bool]:
    """Write the shards of `spec` unless they are cached; returns the manifest and whether it was a cache hit."""
    source = read_source(spec)
    location = storage.join(spec.cache_dir, "shards", cache_key(spec, source.fingerprint))
    if storage.exists(storage.join(location, MANIFEST)):
        return Manifest.load(location), True
    splits = assign_splits(source.examples, spec.split.val, spec.split.test, spec.seed, next(iter(source.tasks)))
    for split in ("train", "val"):
        if not splits[split]:
            raise JobError(f"data.source: the {split} split has no images")
    h, w = spec.image_size
    shape = (h, w, spec.channels)
    files: dict[str, list[str]] = {}
    counts: dict[str, dict[str, list[int]]] = {}
    stats = _PixelStats(spec.channels)
    for split in SPLITS:
        counts[split] = {task: [0] * len(classes) for task, classes in source.tasks.items()}
        for example in splits[split]:
            for task, label in example.labels.items():
                counts[split][task][label] += 1
        pixels = (_pixels(example, shape) for example in splits[split])
        schema = _schema(source.tasks, counts[split], shape)
        files[split] = _write_split(location, split, splits[split], pixels, schema, shape,
                                    stats if split == "train" else None)
    manifest = Manifest(location, posixpath.basename(location), shape, source.tasks, counts, files,
                        *stats.mean_std())
    storage.write_text(storage.join(location, MANIFEST), _manifest_json(manifest))
    return manifest, False


def _pixels(example: Example, shape: tuple[int, int, int]) -> np.ndarray:
    """Load, convert to the job's channels and resize one image to an HWC uint8 array."""
    h, w, c = shape
    with example.load() as image:
        image = image.convert("L" if c == 1 else "RGB")
        if image.size != (w, h):
            image = image.resize((w, h), Image.Resampling.BILINEAR)
        return np.asarray(image, dtype=np.uint8).reshape(h, w, c)


class _PixelStats:
    """Running per-channel mean and std of pixel values (0-1 scale)."""

    def __init__(self, channels: int) -> None:
        self.n = 0
        self.total = np.zeros(channels)
        self.squares = np.zeros(channels)

    def add(self, pixels: np.ndarray) -> None:
        values = pixels.reshape(-1, pixels.shape[-1]).astype(np.float64) / 255
        self.n += len(values)
        self.total += values.sum(0)
        self.squares += (values**2).sum(0)

    def mean_std(self) -> tuple[list[float], list[float]]:
        mean = self.total / max(self.n, 1)
        std = np.sqrt(np.maximum(self.squares / max(self.n, 1) - mean**2, 1e-12))
        return mean.tolist(), std.tolist()


def _schema(tasks: dict[str, list[str]], counts: dict, shape: tuple[int, int, int]) -> pa.Schema:
    described = {"image_shape": list(shape), "tasks": tasks, "counts": counts}
    return pa.schema([("image", pa.binary()), *[(f"label_{t}", pa.int64()) for t in tasks], ("ref", pa.string())],
                     metadata={"cnnjobs": json.dumps(described)})


def _write_split(location: str, split: str, examples: list[Example], pixels: Iterable[np.ndarray],
                 schema: pa.Schema, shape: tuple[int, int, int], stats: _PixelStats | None) -> list[str]:
    """Stream one split into files of about `_FILE_BYTES` raw bytes, `_ROW_GROUP` rows per row group."""
    fs, root = storage.resolve(location)
    fs.create_dir(root, recursive=True)
    tasks = [name[len("label_"):] for name in schema.names if name.startswith("label_")]
    rows_per_file = max(_ROW_GROUP, _FILE_BYTES // int(np.prod(shape)) // _ROW_GROUP * _ROW_GROUP)
    names: list[str] = []
    writer: pq.ParquetWriter | None = None
    buffer: list[tuple[Example, bytes]] = []

    def flush() -> None:
        columns = {"image": [raw for _, raw in buffer],
                   **{f"label_{t}": [ex.labels[t] for ex, _ in buffer] for t in tasks},
                   "ref": [ex.ref for ex, _ in buffer]}
        writer.write_table(pa.table(columns, schema=schema))
        buffer.clear()

    for index, (example, array) in enumerate(zip(examples, pixels)):
        if index % rows_per_file == 0:
            if writer is not None:
                flush()
                writer.close()
            names.append(f"{split}-{len(names):05d}.parquet")
            writer = pq.ParquetWriter(posixpath.join(root, names[-1]), schema, filesystem=fs, compression="zstd")
        if stats is not None:
            stats.add(array)
        buffer.append((example, array.tobytes()))
        if len(buffer) == _ROW_GROUP:
            flush()
    if writer is not None:
        if buffer:
            flush()
        writer.close()
    return names


def _manifest_json(manifest: Manifest) -> str:
    raw = asdict(manifest)
    raw.pop("location")
    return json.dumps(raw, indent=1)
