"""The Ray Data side of training: read the shards, decode raw pixels to uint8 NCHW batches, stream to workers.

Pixels stay uint8 through Ray Data (4x less to move than float32); workers augment them and turn them into
normalized floats on their own device (`to_model_input`), which on a GPU is free compared with the CPU.

How a split reaches the workers depends on its size (`build_datasets`):
  - small (its pixels, once per worker, fit in the in-memory budget): read and decoded on the driver with pyarrow
    and handed to Ray Data as blocks (`from_blocks`: no read tasks, nothing to schedule), or decoded by Ray Data
    tasks and materialized when it is larger than `DRIVER_BYTES`; every worker reads it once and keeps it;
  - large: streamed from the shards every epoch, one Ray Data task per shard file (`split_dataset`), in blocks of
    `BLOCK_BYTES`, at most `STREAM_STORE_BYTES` of Ray's object store in flight per worker, so memory stays flat
    however big the dataset is. The workers take whole blocks and shuffle them by the epoch's seed themselves
    (`train/cache.py`).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyarrow as pa
import ray.data
import torch

from cnnjobs.data.reading import as_block, decode_images, passes_through, read_shards, read_table
from cnnjobs.data.shards import Manifest
from cnnjobs.errors import JobError

BLOCK_BYTES = 16 * 2**20  # decoded pixels per Ray Data block and per decode batch
STREAM_STORE_BYTES = 16 * BLOCK_BYTES  # object store memory a streaming pass may hold per consumer
DRIVER_BYTES = 256 * 2**20  # small splits up to this size are decoded on the driver, without Ray Data tasks
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def warm_up() -> threading.Thread:
    """Run a tiny Ray Data pipeline in the background, on a Ray instance just started for this command. The first
    pipeline on a new Ray instance pays ~1.5 s on 2 cores before its first block (Ray Data's statistics actor, its
    operators, the workers' imports); paid here, while the cluster is checked, the shards written and the loop set
    up, it is not paid by the first epoch (BENCHMARKS.md, entry 1)."""

    def run() -> None:
        try:
            items = ray.data.from_items([{"warm": index} for index in range(2)], override_num_blocks=2)
            for _ in items.map_batches(passes_through, batch_size=1).iter_batches():
                pass
        except Exception as exc:  # noqa: BLE001 - the session may end first: nothing was waiting for this
            logging.getLogger("cnnjobs").info("Ray Data's warm-up did not finish: %s", exc)

    thread = threading.Thread(target=run, name="cnnjobs-ray-data-warm-up", daemon=True)
    thread.start()
    return thread


def split_dataset(manifest: Manifest, split: str) -> ray.data.Dataset:
    """A lazy Ray Dataset of one split: `image` uint8 (N, C, H, W) and one `label_<task>` column per task.

    One Ray Data task per shard file reads it with pyarrow and decodes it (`reading.read_shards`, a module without
    torch), through the storage layer (a local path or a URI). This is Ray Data's cheapest way in: `read_parquet`'s
    read path costs ~1 s before a pass's first block (its planning and metadata tasks), the whole of a small epoch.
    """
    columns = ["image", *(f"label_{task}" for task in manifest.tasks)]
    paths = manifest.paths(split)
    context = ray.data.DataContext.get_current()
    options = context.execution_options
    defaults = context.target_max_block_size, options.resource_limits, options.preserve_order
    # Blocks of ~BLOCK_BYTES instead of Ray's default 128 MiB, and at most STREAM_STORE_BYTES in flight: by default
    # Ray Data buffers up to half the object store, so memory grew with the dataset (BENCHMARKS.md, row 4). Blocks
    # keep the shard order, or a run with several shard files could not repeat itself. The dataset keeps the
    # context it was created with (a copy: setting it afterwards has no effect on this dataset).
    context.target_max_block_size = BLOCK_BYTES
    options.resource_limits, options.preserve_order = stream_limits(), True
    try:
        files = ray.data.from_items([{"path": path} for path in paths], override_num_blocks=len(paths))
        return files.map_batches(read_shards, fn_kwargs={"shape": manifest.image_shape, "columns": columns},
                                 batch_size=1, batch_format="numpy")  # one file per task, one block out
    finally:
        context.target_max_block_size, options.resource_limits, options.preserve_order = defaults


def stream_limits(consumers: int = 1) -> ray.data.ExecutionResources:
    """Ray Data's resource limits for streaming a split to `consumers` (training workers, or the driver): object
    store use capped at `STREAM_STORE_BYTES` per consumer, and at half the cluster's object store. Ray Data's
    limits hold for the whole cluster, so one constant would leave 64 workers ~16 blocks in flight between them."""
    budget = STREAM_STORE_BYTES * max(1, consumers)
    if ray.is_initialized():
        budget = min(budget, max(STREAM_STORE_BYTES, int(ray.cluster_resources().get("object_store_memory", 0) / 2)))
    return ray.data.ExecutionResources.for_limits(object_store_memory=budget)


@dataclass(frozen=True)
class TrainingData:
    """The datasets of a job as training reads them, and which of them every worker reads once and keeps."""

    datasets: dict[str, ray.data.Dataset]
    kept: tuple[str, ...]


def driver_split(manifest: Manifest, split: str) -> ray.data.Dataset:
    """A small split read and decoded here, handed to Ray Data as in-memory blocks (no tasks at all)."""
    columns = ["image", *(f"label_{task}" for task in manifest.tasks)]
    tables = []
    for path in manifest.paths(split):
        try:
            tables.append(read_table(path, columns))
        except pa.ArrowInvalid as exc:  # a footer that does not read: a file changed since the manifest was written
            raise JobError(f"data.cache_dir: {path} is not a readable shard ({str(exc).splitlines()[0][:120]}); write "
                           "the shards again: cnnjobs data prepare JOB.yaml --force") from None
    table = pa.concat_tables(tables)
    decoded = decode_images(table, manifest.image_shape)
    rows_per_block = max(1, BLOCK_BYTES // int(np.prod(manifest.image_shape)))
    blocks = [as_block({name: values[start:start + rows_per_block] for name, values in decoded.items()})
              for start in range(0, len(table), rows_per_block)]
    # from_blocks (exported by ray.data) reads each block's metadata here; from_arrow runs a task per block for it,
    # ~0.6 s per split on a 2-core machine whose workers have not imported Ray Data yet.
    return ray.data.from_blocks(blocks)


def build_datasets(manifest: Manifest, in_memory_bytes: int = 0, workers: int = 1) -> TrainingData:
    """The train, val and (when not empty) test datasets of a prepared manifest.

    Splits whose decoded pixels, one copy per worker, fit in `in_memory_bytes` (together) are kept: decoded once
    (on the driver up to `DRIVER_BYTES`, else by Ray Data into its object store) and then read once by every
    worker, which keeps them (`train/cache.py`). Larger splits stream from the shards every epoch.
    """
    datasets, kept = {}, []
    image_bytes = int(np.prod(manifest.image_shape))
    for split in manifest.files:
        if not manifest.num_rows(split):
            continue
        size = manifest.num_rows(split) * image_bytes
        if size * workers <= in_memory_bytes:
            datasets[split] = driver_split(manifest, split) if size <= DRIVER_BYTES else \
                split_dataset(manifest, split).materialize()
            kept.append(split)
            in_memory_bytes -= size * workers
        else:
            datasets[split] = split_dataset(manifest, split)
    return TrainingData(datasets, tuple(kept))


def normalization(kind: Literal["dataset", "imagenet", "none"], manifest: Manifest) -> tuple[list[float], list[float]]:
    """Per-channel mean and std (0-1 scale) that `to_model_input` applies."""
    channels = manifest.image_shape[2]
    if kind == "dataset":
        return manifest.mean, manifest.std
    if kind == "imagenet":
        if channels == 1:
            return [float(np.mean(IMAGENET_MEAN))], [float(np.mean(IMAGENET_STD))]
        return IMAGENET_MEAN, IMAGENET_STD
    return [0.0] * channels, [1.0] * channels


def to_model_input(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, H, W) on any device -> normalized float32, (x / 255 - mean) / std; `mean`/`std` are
    (1, C, 1, 1) on that device. Computed as x * (1 / (255 std)) - mean / std, in place on one new tensor: three
    passes over the batch instead of four, and one allocation instead of four."""
    return images.float().mul_(1 / (255 * std)).sub_(mean / std)
