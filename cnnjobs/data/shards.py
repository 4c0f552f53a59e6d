"""Parquet shards: the dataset written once, resized, as raw pixels, plus a manifest that describes it.

Layout of one cached dataset, `<cache_dir>/shards/<key>/`:
    train-00000.parquet ...   columns `image` (H*W*C uint8 bytes, row-major HWC), `label_<task>` (int64), `ref`
    val-00000.parquet ...
    test-00000.parquet ...
    dataset.json              the manifest, written last: its presence marks a complete cache entry; it records
                              each file's size, so a damaged entry (a file deleted or cut short) is found by one
                              listing of the folder before anything starts

Raw pixels (zstd-compressed by Parquet) make decoding per epoch a reshape instead of a JPEG/PNG decode.
Image shape, class names and counts are also in each file's Parquet metadata (key `cnnjobs`), so a shard file
describes itself without the manifest.

The cache key covers the source's files (a fingerprint of every file's size and time), which takes a `stat` of
every file: minutes for a million files on a network filesystem. So a cheaper fingerprint comes first (the
source's folders and tables, not its files; see `sources.quick_fingerprint`), kept in
`<cache_dir>/shards-index/<quick key>.json` next to the full key it led to: while the folders are unchanged, a job
finds its shards without listing the source. Files added, removed or renamed change their folder and are noticed;
a file rewritten in place under the same name is not (`cnnjobs data prepare JOB --force` writes the shards again).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Callable

import pyarrow.fs as pafs
import ray

from cnnjobs import storage
from cnnjobs.data import chunks
from cnnjobs.data.chunks import Chunk, PixelStats
from cnnjobs.data.sources import SPLITS, Example, SourceData, assign_splits, hint_of, quick_fingerprint, read_source
from cnnjobs.errors import JobError
from cnnjobs.spec import DataSpec, ParquetSource

log = logging.getLogger("cnnjobs")

FORMAT_VERSION = 1
MANIFEST = "dataset.json"
INDEX = "shards-index"  # <cache_dir>/shards-index/<quick key>.json -> the full key (see the module's docstring)
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
    sizes: dict[str, int] = field(default_factory=dict)  # file name -> bytes (empty in manifests before sizes)

    def num_rows(self, split: str) -> int:
        """Images in `split`."""
        first_task = next(iter(self.tasks))
        return sum(self.counts[split][first_task])

    def paths(self, split: str) -> list[str]:
        """Full paths (or URIs) of the shard files of `split`."""
        return [storage.join(self.location, name) for name in self.files[split]]

    def damage(self) -> str | None:
        """What is wrong with the files of this cache entry, from one listing of its folder: the first file that is
        missing or whose size is not the one written (None when all are there; not checked for manifests written
        before cnnjobs recorded sizes)."""
        if not self.sizes:
            return None
        found = _file_sizes(self.location)
        for name in (name for names in self.files.values() for name in names):
            if name not in found:
                return f"{storage.join(self.location, name)} is missing"
            if name in self.sizes and found[name] != self.sizes[name]:
                return (f"{storage.join(self.location, name)} has {found[name]:,} bytes, not the {self.sizes[name]:,} "
                        "written (cut short or changed)")
        return None

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
    """A dataset looked up, and listed when it has to be written: its tasks and classes are known, the pixels not
    read. Listing first lets the job be checked against the data's tasks before a shard is written or Ray started.
    """

    spec: DataSpec
    location: str
    tasks: dict[str, list[str]]
    cached: Manifest | None  # the manifest when the shards exist already (or the source is shards)
    source: SourceData | None = None  # the listing (None for a cache hit found by the quick fingerprint)
    quick: str | None = None  # the quick key that should lead to this entry from now on

    def write(self, *, start_ray: bool = False, progress: Callable[[int, int], None] | None = None) -> Manifest:
        """The manifest, after writing the shards unless they are cached.

        Chunks of examples are written by Ray tasks when the dataset is large (`RAY_MIN_IMAGES`) and Ray is
        running (or `start_ray` allows starting a local instance for the purpose), on the nodes that see the
        source's files, else one after the other in this process. Each chunk streams its images into one file, so
        memory does not grow with the dataset. `progress(done, total)` is called as images are written. Whatever
        stops the write (a bad image with `on_error: fail`, a listed file not found, any error) leaves no shard.
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
        jobs = [(self.location, split, number, group, shape, source.tasks, spec.on_error)
                for split, number, group in _chunks(splits, shape, total)]
        try:
            written = _write(jobs, progress or (lambda done, of: None), total, start_ray)
            missing = next((chunk.missing for chunk in written if chunk.missing), None)
            if missing:
                raise JobError(f"data.source.path: {missing}; the source changed while its shards were written, or "
                               "a node that writes shards cannot see it (nothing was cached)")
            failed = next((chunk.error for chunk in written if chunk.error), None)
            if failed:
                raise JobError(f"{failed} (data.on_error: fail)")
            self.cached = _finish(self.location, shape, source, written)
        except BaseException:
            _remove(self.location)  # no shards of a partial read, whatever stopped it
            raise
        if self.quick:
            _remember(spec, self.quick, self.location)
        return self.cached


def plan_shards(spec: DataSpec, force: bool = False) -> ShardPlan:
    """Look up the cached shards of `spec` (by the quick fingerprint first), listing the source only when they
    must be written (a missing path or a bad table is an error here). A damaged cache entry is written again from
    the source (a `parquet` source has none: refused); `force` writes it again in any case."""
    if isinstance(spec.source, ParquetSource):
        manifest = _existing(spec)
        return ShardPlan(spec, manifest.location, manifest.tasks, manifest)
    quick = quick_fingerprint(spec)
    if quick and not force:
        hit = _indexed(spec, quick)
        if hit is not None:
            _refuse_left_out(spec, hit.skipped)
            return ShardPlan(spec, hit.location, hit.tasks, hit)
    source = read_source(spec)
    location = storage.join(spec.cache_dir, "shards", cache_key(spec, source.fingerprint))
    cached = _usable(location, force)
    _refuse_left_out(spec, source.skipped or (cached.skipped if cached else []))
    if cached is not None and quick:
        _remember(spec, quick, location)
    return ShardPlan(spec, location, source.tasks, cached, source, quick)


def _refuse_left_out(spec: DataSpec, left_out: list) -> None:
    """With on_error: fail, what the listing left out (or the cached shards did) stops the job now, before Ray."""
    if left_out and spec.on_error == "fail":
        raise JobError(f"{left_out[0][0]}: {left_out[0][1]} (data.on_error: fail)")


def _index(spec: DataSpec, quick: str) -> str:
    return storage.join(spec.cache_dir, INDEX, f"{cache_key(spec, quick)}.json")


def _remember(spec: DataSpec, quick: str, location: str) -> None:
    """Index the cache entry at `location` by the quick fingerprint, for the next lookup."""
    storage.write_text(_index(spec, quick), json.dumps({"location": location}))


def _indexed(spec: DataSpec, quick: str) -> Manifest | None:
    """The cache entry the quick fingerprint led to before, if it is still complete and sound."""
    try:
        location = json.loads(storage.read_text(_index(spec, quick)))["location"]
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None
    return _usable(location, force=False)


def _usable(location: str, force: bool) -> Manifest | None:
    """The manifest of the cache entry at `location`, or None when there is none or it has to be written again:
    `force`, a folder without its manifest (a write cut short), or a damaged file (said in one line)."""
    try:
        manifest = Manifest.load(location)
    except FileNotFoundError:
        if storage.is_dir(location):
            log.warning("the shard cache %s is incomplete (no %s): writing it again from the source", location,
                        MANIFEST)
            _remove(location)
        return None
    except JobError as exc:
        log.warning("the shard cache %s is damaged (%s): writing it again from the source", location, exc)
        _remove(location)
        return None
    damage = None if force else manifest.damage()
    if force or damage:
        if damage:
            log.warning("the shard cache %s is damaged (%s): writing it again from the source", location, damage)
        _remove(location)
        return None
    return manifest


def _remove(location: str) -> None:
    """Delete a shard folder that was being written, and the cache's `shards` folder if that left it empty."""
    storage.delete_dir(location)
    if not storage.is_uri(location):
        with contextlib.suppress(OSError):  # not empty: another dataset's shards
            os.rmdir(os.path.dirname(storage.local_path(location)))


def prepare(spec: DataSpec, *, start_ray: bool = False, force: bool = False,
            progress: Callable[[int, int], None] | None = None) -> tuple[Manifest, bool]:
    """Write the shards of `spec` unless they are cached (`force`: write them again); returns the manifest and
    whether it was a cache hit."""
    plan = plan_shards(spec, force=force)
    cached = plan.cached is not None
    return plan.write(start_ray=start_ray, progress=progress), cached


def _finish(location: str, shape: tuple[int, int, int], source: SourceData, written: list[Chunk]) -> Manifest:
    """Merge what the chunks report into the manifest and write it (last: it marks the cache entry complete)."""
    files: dict[str, list[str]] = {split: [] for split in SPLITS}
    counts = {split: {task: [0] * len(names) for task, names in source.tasks.items()} for split in SPLITS}
    stats = PixelStats(shape[2])
    skipped = [list(item) for item in source.skipped]
    for chunk in written:
        if chunk.name:
            files[chunk.split].append(chunk.name)
        for task, per_class in chunk.counts.items():
            counts[chunk.split][task] = [a + b for a, b in zip(counts[chunk.split][task], per_class)]
        if chunk.split == "train":
            stats.merge(chunk.stats)
        skipped += [list(item) for item in chunk.skipped]
    sizes = _file_sizes(location)
    manifest = Manifest(location, storage.name(location), shape, source.tasks, counts, files,
                        *stats.mean_std(), skipped, sizes={name: sizes[name] for names in files.values()
                                                           for name in names})
    for split in ("train", "val"):
        if not manifest.num_rows(split):
            raise JobError(f"data.source: the {split} split has no usable images "
                           f"({len(skipped)} skipped; first: {skipped[0][0]}: {skipped[0][1]})")
    storage.write_text(storage.join(location, MANIFEST), _manifest_json(manifest))
    return manifest


def _file_sizes(location: str) -> dict[str, int]:
    """The size of each file in a shard folder, from one listing."""
    return {entry.base_name: entry.size for entry in storage.list_dir(location) if entry.type == pafs.FileType.File}


def _existing(spec: DataSpec) -> Manifest:
    """Shards named by a `parquet` source; they must be complete and hold images of the job's size and channels."""
    location = spec.source.path
    try:
        manifest = Manifest.load(location)
    except FileNotFoundError:
        raise JobError(f"data.source.path: {location} holds no cnnjobs shards (no {MANIFEST})"
                       f"{hint_of(spec.source)}") from None
    damage = manifest.damage()
    if damage:
        raise JobError(f"data.source.path: {damage}; these shards are damaged and a parquet source cannot be "
                       "written again here: restore the file, or write the shards again from the original images "
                       "(cnnjobs data prepare THEIR_JOB.yaml --force)")
    h, w, c = manifest.image_shape
    if (h, w, c) != (*spec.image_size, spec.channels):
        raise JobError(f"data.image_size: the shards at {location} hold {h}x{w} images with {c} channel(s); "
                       f"set data.image_size: [{h}, {w}] and data.channels: {c}")
    return manifest


def _chunks(splits: dict[str, list[Example]], shape: tuple[int, int, int], total: int):
    """(split, number, examples): at most one file's worth each, and enough chunks to keep every CPU busy."""
    cpus = int(ray.cluster_resources().get("CPU", 1)) if ray.is_initialized() else os.cpu_count() or 1
    size = chunks.sizes(total, shape, cpus)
    for split in SPLITS:
        group = splits[split]
        for number, start in enumerate(range(0, len(group), size)):
            yield split, number, group[start:start + size]


def _write(jobs: list[tuple], progress: Callable[[int, int], None], total: int, start_ray: bool) -> list[Chunk]:
    """Write the chunks: as Ray tasks on the nodes that see the source when the dataset is large and Ray is running
    (or may be started here), else in this process."""
    if total < RAY_MIN_IMAGES or not (ray.is_initialized() or start_ray):
        return chunks.write_serially(jobs, progress, total)
    if not ray.is_initialized():
        from cnnjobs.session import ray_session

        # RAY_ADDRESS (e.g. inside a Ray Job on a cluster) is used when set, else a local instance.
        with ray_session() as session:
            session.attach(os.path.join(tempfile.gettempdir(), "cnnjobs-logs", "prepare"))
            return _write(jobs, progress, total, start_ray)
    nodes = chunks.nodes_that_see([example for job in jobs for example in job[3]])
    if not nodes:  # e.g. files on the driver's disk, and the driver's node runs no tasks (a cluster's head)
        log.warning("no node with CPUs sees the source's files: writing the shards in this process")
        return chunks.write_serially(jobs, progress, total)
    return chunks.write_on_ray(jobs, progress, total, nodes)


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
