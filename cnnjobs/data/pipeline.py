"""The Ray Data side of training: read the shards, decode raw pixels to uint8 NCHW batches, stream to workers.

Pixels stay uint8 through Ray Data (4x less to move than float32); workers augment them and turn them into
normalized floats on their own device (`to_model_input`), which on a GPU is free compared with the CPU.

How a split reaches the workers depends on its size (`build_datasets`):
  - small (its pixels, once per worker, fit in the in-memory budget): read and decoded on the driver with pyarrow
    and handed to Ray Data as blocks (`from_arrow`: no read tasks, nothing to schedule), or decoded by Ray Data
    tasks and materialized when it is larger than `DRIVER_BYTES`; every worker reads it once and keeps it;
  - large: streamed from the shards every epoch, in blocks of `BLOCK_BYTES`, at most `STREAM_STORE_BYTES` of
    Ray's object store in flight, so memory stays flat however big the dataset is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray.data
import torch
from ray.data.extensions import ArrowTensorArray

from cnnjobs import storage
from cnnjobs.data.shards import Manifest

BLOCK_BYTES = 16 * 2**20  # decoded pixels per Ray Data block and per decode batch
STREAM_STORE_BYTES = 16 * BLOCK_BYTES  # object store memory a streaming pass may hold per consumer
DRIVER_BYTES = 256 * 2**20  # small splits up to this size are decoded on the driver, without Ray Data tasks
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def decode_images(batch: pa.Table, shape: tuple[int, int, int]) -> dict[str, np.ndarray]:
    """Raw HWC bytes per row -> one uint8 array of shape (N, C, H, W); the label columns pass through.

    The pixels are read in place from the Arrow column's data buffer (every value has the same length), so the
    only copy is the HWC -> CHW transpose.
    """
    h, w, c = shape
    column = batch.column("image").combine_chunks()  # a copy only when the batch spans several chunks
    width = np.int64 if pa.types.is_large_binary(column.type) else np.int32
    offsets = np.frombuffer(column.buffers()[1], dtype=width)[column.offset:column.offset + len(column) + 1]
    raw = np.frombuffer(column.buffers()[2], dtype=np.uint8)[offsets[0]:offsets[-1]]
    out = {name: batch.column(name).to_numpy() for name in batch.column_names if name != "image"}
    out["image"] = np.ascontiguousarray(raw.reshape(len(column), h, w, c).transpose(0, 3, 1, 2))
    return out


def split_dataset(manifest: Manifest, split: str) -> ray.data.Dataset:
    """A lazy Ray Dataset of one split: `image` uint8 (N, C, H, W) and one `label_<task>` column per task."""
    fs, _ = storage.resolve(manifest.location)
    paths = [storage.resolve(path)[1] for path in manifest.paths(split)]
    columns = ["image", *(f"label_{task}" for task in manifest.tasks)]
    image_bytes = int(np.prod(manifest.image_shape))
    context = ray.data.DataContext.get_current()
    options = context.execution_options
    defaults = context.target_max_block_size, options.resource_limits, options.preserve_order
    # Blocks of ~BLOCK_BYTES instead of Ray's default 128 MiB: a read task otherwise holds several shard files
    # and their decoded copies at once (1.2 GiB per task at 150 px). And at most STREAM_STORE_BYTES in flight:
    # by default Ray Data buffers up to half the object store, so memory grew with the dataset (BENCHMARKS.md,
    # row 4). Blocks keep the shard order, or a run with several shard files could not repeat itself. The dataset
    # keeps the context it was created with (a copy: setting it afterwards has no effect on this dataset).
    context.target_max_block_size = BLOCK_BYTES
    options.resource_limits, options.preserve_order = stream_limits(), True
    try:
        dataset = ray.data.read_parquet(paths, filesystem=fs, columns=columns, override_num_blocks=len(paths))
        return dataset.map_batches(decode_images, fn_kwargs={"shape": manifest.image_shape}, batch_format="pyarrow",
                                   batch_size=max(1, BLOCK_BYTES // image_bytes))
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
    fs, _ = storage.resolve(manifest.location)
    columns = ["image", *(f"label_{task}" for task in manifest.tasks)]
    table = pq.read_table([storage.resolve(path)[1] for path in manifest.paths(split)], filesystem=fs,
                          columns=columns)
    decoded = decode_images(table, manifest.image_shape)
    rows_per_block = max(1, BLOCK_BYTES // int(np.prod(manifest.image_shape)))
    tables = [pa.table({"image": ArrowTensorArray.from_numpy(decoded["image"][start:start + rows_per_block]),
                        **{name: pa.array(values[start:start + rows_per_block])
                           for name, values in decoded.items() if name != "image"}})
              for start in range(0, len(table), rows_per_block)]
    # from_blocks (exported by ray.data) reads each block's metadata here; from_arrow runs a task per block for it,
    # ~0.6 s per split on a 2-core machine whose workers have not imported Ray Data yet.
    return ray.data.from_blocks(tables)


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
    """uint8 (N, C, H, W) on any device -> normalized float32; `mean`/`std` are (1, C, 1, 1) on that device."""
    return (images.float() / 255 - mean) / std
