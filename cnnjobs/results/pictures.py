"""A finished run's pictures and TensorBoard events, drawn from what its folder holds: when the run ends, and again
by `cnnjobs show RUN --plots`.

Besides the curves and confusion matrices (`plots.save_plots`), the best model predicts the first images of the
evaluated split (a grid, green when right and red when wrong, seed 003) and, for a job that augments, the first
training images are drawn as stored and after three augmentation draws (to check the pipeline by eye).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch

from cnnjobs import storage
from cnnjobs.data.augment import make_augment
from cnnjobs.data.pipeline import decode_images
from cnnjobs.data.shards import MANIFEST, Manifest
from cnnjobs.results.grids import Augmented, EvaluatedImages
from cnnjobs.results.plots import save_plots
from cnnjobs.results.tensorboard import write_epochs
from cnnjobs.run import layout
from cnnjobs.run.summary import TrainSummary
from cnnjobs.spec import JobSpec

GRID_IMAGES = 24
AUGMENTED_IMAGES, DRAWS = 8, 3


def draw(location: str, summary: TrainSummary, rows: list[dict[str, Any]], job: JobSpec) -> list[str]:
    """Write the run's TensorBoard events and pictures into its folder; returns the picture files written."""
    if not rows:
        return []
    write_epochs(storage.join(location, layout.TENSORBOARD), rows)
    manifest = Manifest.load(summary.data.shards) if summary.data and \
        storage.exists(storage.join(summary.data.shards, MANIFEST)) else None
    predictions = augmented = None
    if manifest is not None and summary.evaluated and summary.best_model and \
            storage.exists(storage.join(location, layout.BEST_MODEL)):
        from cnnjobs.results.trained import trained_from
        from cnnjobs.run.find import Run

        images, labels = first_images(manifest, summary.evaluated, GRID_IMAGES)
        trained = trained_from(Run(location, summary), job, summary)
        probabilities = trained.probabilities(torch.from_numpy(images))
        predictions = EvaluatedImages(images, {task: values.tolist() for task, values in labels.items()},
                                      {task: p.argmax(1).tolist() for task, p in probabilities.items()})
    if manifest is not None and job.data.augment is not None:
        originals, _ = first_images(manifest, "train", AUGMENTED_IMAGES)
        augment = make_augment(job.data.augment)
        draws = [augment(torch.from_numpy(originals), draw).numpy()
                 for draw in range(DRAWS)]
        augmented = Augmented(originals, draws)
    return save_plots(location, summary, rows, predictions, augmented)


def first_images(manifest: Manifest, split: str, count: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The first `count` images of a split as stored in the shards (uint8 N, C, H, W) and their labels per task."""
    fs, _ = storage.resolve(manifest.location)
    table = pq.read_table(storage.resolve(manifest.paths(split)[0])[1], filesystem=fs).slice(0, count)
    batch = decode_images(table, manifest.image_shape)
    return batch["image"], {task: batch[f"label_{task}"] for task in manifest.tasks}
