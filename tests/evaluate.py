"""A run's saved model evaluated with plain torch, outside cnnjobs' loop: what its summary must agree with."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import torch

from cnnjobs.data.pipeline import decode_images, normalization, to_model_input
from cnnjobs.data.shards import Manifest
from cnnjobs.models import build_model
from cnnjobs.spec import JobSpec


def saved_model_counts(run_dir: str, shards: str, job: JobSpec, split: str = "test") -> tuple[int, int]:
    """(images right, images) of the run's best_model.pt on one split of the digits shards, in one batch."""
    manifest = Manifest.load(shards)
    table = pq.read_table(manifest.paths(split))
    images = torch.from_numpy(decode_images(table, manifest.image_shape)["image"])
    model = build_model(job.model, {t: len(c) for t, c in manifest.tasks.items()}, manifest.image_shape[:2],
                        manifest.image_shape[2], init_weights=False)
    model.load_state_dict(torch.load(Path(run_dir) / "best_model.pt"))
    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in normalization(job.data.normalize, manifest))
    with torch.no_grad():
        predicted = model.eval()(to_model_input(images, mean, std))["digit"].argmax(1)
    labels = torch.tensor(table.column("label_digit").to_pylist())
    return int((predicted == labels).sum()), len(labels)
