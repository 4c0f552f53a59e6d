"""The Ray Data side of training: read the shards, decode raw pixels to uint8 NCHW batches, stream to workers.

Pixels stay uint8 through Ray Data (4x less to move than float32); workers turn them into normalized floats on
their own device (`to_model_input`), which on a GPU is free compared with doing it on the CPU.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pyarrow as pa
import ray.data
import torch

from cnnjobs import storage
from cnnjobs.data.augment import EpochCounter, augment_batch, make_augment
from cnnjobs.data.shards import Manifest
from cnnjobs.spec import AugmentSpec

BLOCK_BYTES = 16 * 2**20  # decoded pixels per Ray Data block and per decode batch
STREAM_STORE_BYTES = 16 * BLOCK_BYTES  # object store memory one streaming pass may hold
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


def stream_limits() -> ray.data.ExecutionResources:
    """Ray Data's resource limits for streaming a split: object store use capped at `STREAM_STORE_BYTES`."""
    return ray.data.ExecutionResources.for_limits(object_store_memory=STREAM_STORE_BYTES)


def build_datasets(manifest: Manifest, in_memory_bytes: int = 0, augment: AugmentSpec | None = None,
                   seed: int = 0) -> dict[str, ray.data.Dataset]:
    """The train, val and (when not empty) test datasets of a prepared manifest.

    Splits whose decoded pixels fit in `in_memory_bytes` (together) are materialized in Ray's object store once:
    starting a streaming read costs seconds per epoch, which dominates on small datasets. Larger splits stream
    from the shards every epoch, so memory stays flat however big the dataset is. `augment` applies to the train
    split only, after materialization, so that it is redrawn every epoch.
    """
    datasets = {}
    image_bytes = int(np.prod(manifest.image_shape))
    for split in manifest.files:
        if not manifest.num_rows(split):
            continue
        dataset = split_dataset(manifest, split)
        size = manifest.num_rows(split) * image_bytes
        if size <= in_memory_bytes:
            dataset = dataset.materialize()
            in_memory_bytes -= size
        if split == "train" and augment is not None:
            dataset = dataset.map_batches(augment_batch, batch_format="numpy", fn_kwargs={
                "augment": make_augment(augment), "seed": seed, "counter": EpochCounter.remote()})
        datasets[split] = dataset
    return datasets


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
