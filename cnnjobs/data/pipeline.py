"""The Ray Data side of training: read the shards, decode raw pixels to uint8 NCHW batches, stream to workers.

Pixels stay uint8 through Ray Data (4x less to move than float32); workers turn them into normalized floats on
their own device (`to_model_input`), which on a GPU is free compared with doing it on the CPU.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import ray.data
import torch

from cnnjobs import storage
from cnnjobs.data.augment import EpochCounter, augment_batch, make_augment
from cnnjobs.data.shards import Manifest
from cnnjobs.spec import AugmentSpec

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def decode_images(batch: dict[str, np.ndarray], shape: tuple[int, int, int]) -> dict[str, np.ndarray]:
    """Raw HWC bytes per row -> one uint8 array of shape (N, C, H, W); labels pass through."""
    h, w, c = shape
    raw = np.frombuffer(b"".join(batch.pop("image")), dtype=np.uint8)
    batch["image"] = np.ascontiguousarray(raw.reshape(-1, h, w, c).transpose(0, 3, 1, 2))
    return batch


def split_dataset(manifest: Manifest, split: str) -> ray.data.Dataset:
    """A lazy Ray Dataset of one split: `image` uint8 (N, C, H, W) and one `label_<task>` column per task."""
    fs, _ = storage.resolve(manifest.location)
    paths = [storage.resolve(path)[1] for path in manifest.paths(split)]
    columns = ["image", *(f"label_{task}" for task in manifest.tasks)]
    dataset = ray.data.read_parquet(paths, filesystem=fs, columns=columns)
    return dataset.map_batches(decode_images, fn_kwargs={"shape": manifest.image_shape}, batch_format="numpy")


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
            # Materialized blocks keep the shard order, or a run with several shard files could not repeat itself.
            ray.data.DataContext.get_current().execution_options.preserve_order = True
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
