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

import contextlib
import csv
import hashlib
import io
import json
import os
import posixpath
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray

from cnnjobs import storage
from cnnjobs.data.decode import BadImage, load_pixels
from cnnjobs.data.sources import SPLITS, Example, SourceData, assign_splits, hint_of, read_source
from cnnjobs.errors import JobError
from cnnjobs.spec import DataSpec, ParquetSource

FORMAT_VERSION = 1
MANIFEST = "dataset.json"
_ROW_GROUP = 512
_FILE_BYTES = 64 * 2**20  # target size of one shard file before compression
RAY_MIN_IMAGES = 5000  # below this, starting a Ray instance (~10 s) costs more than writing serially


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
    skipped: list[list[str]] = field(default_factory=list)  # [ref, reason] of every example left out
    format: int = FORMAT_VERSION  # of the shard layout; manifests without it are format 1

    def num_rows(self, split: str) -> int:
        """Images in `split`."""
        first_task = next(iter(self.tasks))
        return sum(self.counts[split][first_task])

    def paths(self, split: str) -> list[str]:
        """Full paths (or URIs) of the shard files of `split`."""
        return [storage.join(self.location, name) for name in self.files[split]]

    @classmethod
    def load(cls, location: str) -> "Manifest":
        """Read the manifest of a shard folder; JobError when it was written by another cnnjobs or is damaged."""
        path = storage.join(location, MANIFEST)
        try:
            raw = json.loads(storage.read_text(path))
            version = raw.get("format", 1)
            if version != FORMAT_VERSION:
                raise JobError(f"data.source.path: {location} holds shards of format {version}, written by another "
                               f"version of cnnjobs (this one reads format {FORMAT_VERSION}); write them again from "
                               "the original images")
            raw.update(location=location, image_shape=tuple(raw["image_shape"]), format=version)
            return cls(**raw)
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise JobError(f"data.source.path: {path} is not a readable cnnjobs manifest "
                           f"({exc.__class__.__name__}: {exc})") from None


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


@dataclass
class ShardPlan:
    """A dataset listed but not written yet: its tasks and classes are known, the pixels not read.

    Listing first lets the job be checked against the data's tasks before a shard is written or Ray started.
    """

    spec: DataSpec
    location: str
    tasks: dict[str, list[str]]
    cached: Manifest | None  # the manifest when the shards exist already (or the source is shards)
    source: SourceData | None = None

    def write(self, *, start_ray: bool = False, progress: Callable[[int, int], None] | None = None) -> Manifest:
        """The manifest, after writing the shards unless they are cached.

        Chunks of examples are written by Ray tasks when the dataset is large (`RAY_MIN_IMAGES`) and Ray is
        running (or `start_ray` allows starting a local instance for the purpose), else one after the other in
        this process. Each chunk streams its images into one file, so memory does not grow with the dataset.
        `progress(done, total)` is called as images are written.
        """
        if self.cached is not None:
            return self.cached
        spec, source = self.spec, self.source
        splits = assign_splits(source.examples, spec.split.val, spec.split.test, spec.seed, next(iter(source.tasks)))
        for split in ("train", "val"):
            if not splits[split]:
                raise JobError(f"data.source: the {split} split has no images")
        shape = (*spec.image_size, spec.channels)
        total = sum(len(group) for group in splits.values())
        run_chunks = _on_ray if total >= RAY_MIN_IMAGES and (ray.is_initialized() or start_ray) else _serial
        chunks = list(_chunks(splits, shape, total))
        try:
            written = run_chunks([(self.location, split, number, group, shape, source.tasks, spec.on_error)
                                  for split, number, group in chunks], progress or (lambda done, of: None), total)
            failed = next((chunk.error for chunk in written if chunk.error), None)
            if failed:
                raise JobError(f"{failed} (data.on_error: fail)")
            self.cached = _finish(self.location, shape, source, written)
        except JobError:
            _remove(self.location)  # a refused dataset leaves no partial shards behind
            raise
        return self.cached


def plan_shards(spec: DataSpec) -> ShardPlan:
    """List the source of `spec` (a missing path or a bad table is an error here) and look up its cached shards."""
    if isinstance(spec.source, ParquetSource):
        manifest = _existing(spec)
        return ShardPlan(spec, manifest.location, manifest.tasks, manifest)
    source = read_source(spec)
    location = storage.join(spec.cache_dir, "shards", cache_key(spec, source.fingerprint))
    cached = Manifest.load(location) if storage.exists(storage.join(location, MANIFEST)) else None
    # With on_error: fail, what the listing left out (or the cached shards did) stops the job now, before Ray.
    left_out = source.skipped or (cached.skipped if cached else [])
    if left_out and spec.on_error == "fail":
        raise JobError(f"{left_out[0][0]}: {left_out[0][1]} (data.on_error: fail)")
    return ShardPlan(spec, location, source.tasks, cached, source)


def _remove(location: str) -> None:
    """Delete a shard folder that was being written, and the cache's `shards` folder if that left it empty."""
    fs, root = storage.resolve(location)
    try:
        fs.delete_dir(root)
    except FileNotFoundError:
        return
    if not storage.is_uri(location):
        with contextlib.suppress(OSError):  # not empty: another dataset's shards
            os.rmdir(os.path.dirname(root))


def prepare(spec: DataSpec, *, start_ray: bool = False,
            progress: Callable[[int, int], None] | None = None) -> tuple[Manifest, bool]:
    """Write the shards of `spec` unless they are cached; returns the manifest and whether it was a cache hit."""
    plan = plan_shards(spec)
    cached = plan.cached is not None
    return plan.write(start_ray=start_ray, progress=progress), cached


def _finish(location: str, shape: tuple[int, int, int], source: SourceData, written: list[Chunk]) -> Manifest:
    """Merge what the chunks report into the manifest and write it (last: it marks the cache entry complete)."""
    files: dict[str, list[str]] = {split: [] for split in SPLITS}
    counts = {split: {task: [0] * len(names) for task, names in source.tasks.items()} for split in SPLITS}
    stats = _PixelStats(shape[2])
    skipped = [list(item) for item in source.skipped]
    for chunk in written:
        if chunk.name:
            files[chunk.split].append(chunk.name)
        for task, per_class in chunk.counts.items():
            counts[chunk.split][task] = [a + b for a, b in zip(counts[chunk.split][task], per_class)]
        if chunk.split == "train":
            stats.merge(chunk.stats)
        skipped += [list(item) for item in chunk.skipped]
    manifest = Manifest(location, posixpath.basename(location), shape, source.tasks, counts, files,
                        *stats.mean_std(), skipped)
    for split in ("train", "val"):
        if not manifest.num_rows(split):
            raise JobError(f"data.source: the {split} split has no usable images "
                           f"({len(skipped)} skipped; first: {skipped[0][0]}: {skipped[0][1]})")
    storage.write_text(storage.join(location, MANIFEST), _manifest_json(manifest))
    return manifest


def _existing(spec: DataSpec) -> Manifest:
    """Shards named by a `parquet` source; they must hold images of the job's size and channels."""
    location = spec.source.path
    if not storage.exists(storage.join(location, MANIFEST)):
        raise JobError(f"data.source.path: {location} holds no cnnjobs shards (no {MANIFEST})"
                       f"{hint_of(spec.source)}")
    manifest = Manifest.load(location)
    h, w, c = manifest.image_shape
    if (h, w, c) != (*spec.image_size, spec.channels):
        raise JobError(f"data.image_size: the shards at {location} hold {h}x{w} images with {c} channel(s); "
                       f"set data.image_size: [{h}, {w}] and data.channels: {c}")
    return manifest


def _chunks(splits: dict[str, list[Example]], shape: tuple[int, int, int], total: int):
    """(split, number, examples): at most one file's worth each, and enough chunks to keep every CPU busy."""
    rows_per_file = max(_ROW_GROUP, _FILE_BYTES // int(np.prod(shape)) // _ROW_GROUP * _ROW_GROUP)
    cpus = int(ray.cluster_resources().get("CPU", 1)) if ray.is_initialized() else os.cpu_count() or 1
    size = min(rows_per_file, max(256, -(-total // (4 * cpus))))
    for split in SPLITS:
        group = splits[split]
        for number, start in enumerate(range(0, len(group), size)):
            yield split, number, group[start:start + size]


def _serial(jobs: list[tuple], progress: Callable[[int, int], None], total: int) -> list[Chunk]:
    done, out = 0, []
    for job in jobs:
        out.append(write_chunk(*job))
        done += len(job[3])
        progress(done, total)
        if out[-1].error:
            break
    return out


def _on_ray(jobs: list[tuple], progress: Callable[[int, int], None], total: int) -> list[Chunk]:
    """Run `write_chunk` as Ray tasks, a bounded number in flight (so pending chunks do not pile up in memory)."""
    if not ray.is_initialized():
        from cnnjobs.session import ray_session

        # RAY_ADDRESS (e.g. inside a Ray Job on a cluster) is used when set, else a local instance.
        with ray_session() as session:
            session.attach(os.path.join(tempfile.gettempdir(), "cnnjobs-logs", "prepare"))
            return _on_ray(jobs, progress, total)
    task = ray.remote(num_cpus=1, max_retries=1)(write_chunk)
    limit = 2 * max(int(ray.cluster_resources().get("CPU", 1)), 1)
    results: dict[int, Chunk] = {}
    pending: dict[ray.ObjectRef, int] = {}
    queue = list(enumerate(jobs))
    done = 0
    while queue or pending:
        while queue and len(pending) < limit:
            index, job = queue.pop(0)
            pending[task.remote(*job)] = index
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            index = pending.pop(ref)
            results[index] = ray.get(ref)
            done += len(jobs[index][3])
            progress(done, total)
            if results[index].error:  # data.on_error: fail - stop at the first bad image
                for other in pending:
                    ray.cancel(other)
                return [results[index]]
    return [results[i] for i in range(len(jobs))]


@dataclass
class Chunk:
    """What one chunk writer reports: its file (None when every image was skipped), counts, pixel sums, skips."""

    split: str
    name: str | None
    counts: dict[str, list[int]]
    stats: tuple[int, list[float], list[float]]
    skipped: list[tuple[str, str]]
    error: str | None = None


def write_chunk(location: str, split: str, number: int, examples: list[Example], shape: tuple[int, int, int],
                tasks: dict[str, list[str]], on_error: str) -> Chunk:
    """Decode, convert and resize `examples` and stream them into `<location>/<split>-<number>.parquet`."""
    fs, root = storage.resolve(location)
    name = f"{split}-{number:05d}.parquet"
    schema = pa.schema([("image", pa.binary()), *[(f"label_{t}", pa.int64()) for t in tasks], ("ref", pa.string())])
    counts = {task: [0] * len(names) for task, names in tasks.items()}
    stats = _PixelStats(shape[2])
    skipped: list[tuple[str, str]] = []
    writer: pq.ParquetWriter | None = None
    buffer: list[tuple[Example, bytes]] = []

    def flush() -> None:
        columns = {"image": [raw for _, raw in buffer],
                   **{f"label_{t}": [ex.labels[t] for ex, _ in buffer] for t in tasks},
                   "ref": [ex.ref for ex, _ in buffer]}
        writer.write_table(pa.table(columns, schema=schema), row_group_size=_ROW_GROUP)
        buffer.clear()

    for example in examples:
        try:
            pixels = load_pixels(example.load, shape)
        except BadImage as exc:
            if on_error == "fail":
                if writer is not None:
                    writer.close()
                return Chunk(split, None, counts, stats.state(), skipped, f"{example.ref}: {exc}")
            skipped.append((example.ref, str(exc)))
            continue
        if writer is None:  # the folder too is created only for an image that is kept
            fs.create_dir(root, recursive=True)
            writer = pq.ParquetWriter(posixpath.join(root, name), schema, filesystem=fs, compression="zstd")
        stats.add(pixels)
        for task, label in example.labels.items():
            counts[task][label] += 1
        buffer.append((example, pixels.tobytes()))
        if len(buffer) == _ROW_GROUP:
            flush()
    if writer is None:
        return Chunk(split, None, counts, stats.state(), skipped)
    if buffer:
        flush()
    # The file describes itself: image shape, class names and its own counts (known only now, after skips).
    writer.add_key_value_metadata({"cnnjobs": json.dumps({"image_shape": list(shape), "tasks": tasks,
                                                          "counts": counts})})
    writer.close()
    return Chunk(split, name, counts, stats.state(), skipped)


class _PixelStats:
    """Running per-channel sums of pixel values (0-1 scale), mergeable across chunks."""

    def __init__(self, channels: int) -> None:
        self.n = 0
        self.total = np.zeros(channels)
        self.squares = np.zeros(channels)

    def add(self, pixels: np.ndarray) -> None:
        values = pixels.reshape(-1, pixels.shape[-1]).astype(np.int64)  # exact integer sums, then scaled
        self.n += len(values)
        self.total += values.sum(0) / 255
        self.squares += (values * values).sum(0) / 255**2

    def state(self) -> tuple[int, list[float], list[float]]:
        return self.n, self.total.tolist(), self.squares.tolist()

    def merge(self, state: tuple[int, list[float], list[float]]) -> None:
        self.n += state[0]
        self.total += state[1]
        self.squares += state[2]

    def mean_std(self) -> tuple[list[float], list[float]]:
        mean = self.total / max(self.n, 1)
        std = np.sqrt(np.maximum(self.squares / max(self.n, 1) - mean**2, 1e-12))
        return mean.tolist(), std.tolist()


def _manifest_json(manifest: Manifest) -> str:
    raw = asdict(manifest)
    raw.pop("location")
    return json.dumps(raw, indent=1)


def skipped_csv(manifest: Manifest) -> str:
    """`skipped.csv`: one row per image or table row left out of the shards (`ref`, `reason`)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["ref", "reason"])
    writer.writerows(manifest.skipped)
    return out.getvalue()
