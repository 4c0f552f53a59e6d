"""Writing a dataset's shards in chunks: each chunk of examples decoded, resized and streamed into one Parquet file,
one after the other in this process or as Ray tasks, and only where the images can be read.

A chunk task reads image files by their path, so it runs only on a node that sees the source: before the tasks
start, a probe on every node with CPUs looks for a sample of the listed files, and the chunks are pinned to the
nodes that found them (all of them on a shared mount; none when the files are on the driver's disk and the driver's
node runs no tasks, and then the chunks are written in this process). A file that was listed and is not there when
its chunk is written is an error, never a skipped image: `Chunk.missing` stops the whole write, and no shard of
a partial read is kept.
"""

from __future__ import annotations

import json
import os
import posixpath
import socket
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from cnnjobs import storage
from cnnjobs.data.decode import BadImage, MissingImage, load_pixels
from cnnjobs.data.sources import Example

ROW_GROUP = 512
FILE_BYTES = 64 * 2**20  # target size of one shard file before compression

Job = tuple  # the arguments of one `write_chunk` call
Progress = Callable[[int, int], None]


@dataclass
class Chunk:
    """What one chunk writer reports: its file (None when every image was skipped), counts, pixel sums, skips, and
    why it stopped early: an image refused with `on_error: fail` (`error`), or a listed file not found (`missing`)."""

    split: str
    name: str | None
    counts: dict[str, list[int]]
    stats: tuple[int, list[float], list[float]]
    skipped: list[tuple[str, str]]
    error: str | None = None
    missing: str | None = None

    @property
    def stopped(self) -> bool:
        """Whether the writer stopped early (the whole write stops with it)."""
        return bool(self.error or self.missing)


def sizes(total: int, shape: tuple[int, int, int], cpus: int) -> int:
    """Examples per chunk: at most one file's worth, and enough chunks to keep every CPU busy."""
    rows_per_file = max(ROW_GROUP, FILE_BYTES // int(np.prod(shape)) // ROW_GROUP * ROW_GROUP)
    return min(rows_per_file, max(256, -(-total // (4 * cpus))))


def write_serially(jobs: list[Job], progress: Progress, total: int) -> list[Chunk]:
    """Write the chunks one after the other in this process (stopping at the first that stops early)."""
    done, out = 0, []
    for job in jobs:
        out.append(write_chunk(*job))
        done += len(job[3])
        progress(done, total)
        if out[-1].stopped:
            break
    return out


def write_on_ray(jobs: list[Job], progress: Progress, total: int, nodes: list[str]) -> list[Chunk]:
    """Run `write_chunk` as Ray tasks pinned to `nodes` in turn, a bounded number in flight (so pending chunks do
    not pile up in memory); the first chunk that stops early cancels the others."""
    task = ray.remote(num_cpus=1, max_retries=1)(write_chunk)
    limit = 2 * max(int(ray.cluster_resources().get("CPU", 1)), 1)
    results: dict[int, Chunk] = {}
    pending: dict[ray.ObjectRef, int] = {}
    queue = list(enumerate(jobs))
    done = 0
    while queue or pending:
        while queue and len(pending) < limit:
            index, job = queue.pop(0)
            where = NodeAffinitySchedulingStrategy(nodes[index % len(nodes)], soft=False)
            pending[task.options(scheduling_strategy=where).remote(*job)] = index
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            index = pending.pop(ref)
            results[index] = ray.get(ref)
            done += len(jobs[index][3])
            progress(done, total)
            if results[index].stopped:
                for other in pending:
                    ray.cancel(other)
                return [results[index]]
    return [results[i] for i in range(len(jobs))]


def nodes_that_see(examples: list[Example]) -> list[str]:
    """The ids of the alive nodes with CPUs whose processes find a sample of the examples' files (every such node
    when the examples are not files, e.g. arrays held in memory)."""
    nodes = [node for node in ray.nodes() if node.get("Alive") and node.get("Resources", {}).get("CPU", 0) >= 1]
    paths = [path for path in (_file_of(example) for example in examples) if path is not None]
    if not paths:
        return [node["NodeID"] for node in nodes]
    sample = sorted({paths[0], paths[len(paths) // 2], paths[-1]})  # the first, middle and last listed files
    return [node["NodeID"] for node, found in zip(nodes, seen_by(nodes, sample)) if found]


def seen_by(nodes: list[dict], paths: list[str]) -> list[bool]:
    """For each of `nodes` (entries of `ray.nodes()`), whether a process there finds every one of `paths`."""
    return ray.get([_sees.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False))
                    .remote(paths) for node in nodes])


def _file_of(example: Example) -> str | None:
    path = getattr(example.load, "path", None)  # ImageFile, IdxImage: read from a file by its path
    return str(path) if path is not None else None


@ray.remote(num_cpus=0)
def _sees(paths: list[str]) -> bool:
    return all(os.path.exists(path) for path in paths)


def write_chunk(location: str, split: str, number: int, examples: list[Example], shape: tuple[int, int, int],
                tasks: dict[str, list[str]], on_error: str) -> Chunk:
    """Decode, convert and resize `examples` and stream them into `<location>/<split>-<number>.parquet`."""
    fs, root = storage.resolve(location)
    name = f"{split}-{number:05d}.parquet"
    schema = pa.schema([("image", pa.binary()), *[(f"label_{t}", pa.int64()) for t in tasks], ("ref", pa.string())])
    counts = {task: [0] * len(names) for task, names in tasks.items()}
    stats = PixelStats(shape[2])
    skipped: list[tuple[str, str]] = []
    writer: pq.ParquetWriter | None = None
    buffer: list[tuple[Example, bytes]] = []

    def flush() -> None:
        columns = {"image": [raw for _, raw in buffer],
                   **{f"label_{t}": [ex.labels[t] for ex, _ in buffer] for t in tasks},
                   "ref": [ex.ref for ex, _ in buffer]}
        writer.write_table(pa.table(columns, schema=schema), row_group_size=ROW_GROUP)
        buffer.clear()

    def stop(**why: str) -> Chunk:
        if writer is not None:
            writer.close()
        return Chunk(split, None, counts, stats.state(), skipped, **why)

    for example in examples:
        try:
            pixels = load_pixels(example.load, shape)
        except MissingImage:  # listed, then gone (or never visible on this node): never a skipped image
            return stop(missing=f"{example.ref}: listed, but not found when its shard was written on "
                                f"{socket.gethostname()}")
        except BadImage as exc:
            if on_error == "fail":
                return stop(error=f"{example.ref}: {exc}")
            skipped.append((example.ref, str(exc)))
            continue
        if writer is None:  # the folder too is created only for an image that is kept
            fs.create_dir(root, recursive=True)
            writer = pq.ParquetWriter(posixpath.join(root, name), schema, filesystem=fs, compression="zstd")
        stats.add(pixels)
        for task, label in example.labels.items():
            counts[task][label] += 1
        buffer.append((example, pixels.tobytes()))
        if len(buffer) == ROW_GROUP:
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


class PixelStats:
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
