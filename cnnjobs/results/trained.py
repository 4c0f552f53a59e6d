"""A finished run's model, ready to use: the best weights in the architecture that trained them, with exactly the
training preprocessing (resize to the shard size, the channels, the normalization) and the class names per task.

Everything that uses a trained model (predict, export, visualize) starts from `load_trained`.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cnnjobs import storage
from cnnjobs.data.decode import BadImage, load_pixels
from cnnjobs.data.pipeline import to_model_input
from cnnjobs.data.sources import ImageFile
from cnnjobs.errors import JobError
from cnnjobs.models.heads import MultiHead, class_scores
from cnnjobs.run import layout
from cnnjobs.run.find import Run, find_run
from cnnjobs.run.summary import TrainSummary
from cnnjobs.spec import JobSpec


@dataclass
class Preprocessing:
    """What an image goes through before the model sees it, as `preprocessing.json` writes it for exports."""

    image_size: tuple[int, int]  # height, width: every image is resized to this (bilinear), as the shards were
    channels: int  # 1: grayscale, 3: RGB (transparency composited on white, EXIF orientation applied)
    mean: list[float]  # per channel, on the 0-1 scale: x = (pixel / 255 - mean) / std
    std: list[float]
    classes: dict[str, list[str]]  # task -> class names, in the order of the model's outputs
    outputs: dict[str, str]  # task -> "softmax" (one logit per class) or "sigmoid" (one logit: class 1's score)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (*self.image_size, self.channels)


@dataclass
class TrainedModel:
    """A run's best model (in eval mode, on the CPU) and its preprocessing."""

    run: Run
    job: JobSpec
    summary: TrainSummary
    model: MultiHead
    preprocessing: Preprocessing

    def pixels(self, path: str | Path) -> np.ndarray:
        """One image file as the model's uint8 (C, H, W) input; BadImage when it cannot be read."""
        pixels = load_pixels(ImageFile(str(path)), self.preprocessing.shape).transpose(2, 0, 1)
        return np.require(pixels, requirements=["C", "W"])  # decoded buffers can be read-only; torch wants writable

    def inputs(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, C, H, W) -> the normalized float tensor the model takes."""
        device = next(self.model.parameters()).device
        prep = self.preprocessing
        mean = torch.tensor(prep.mean, device=device).view(1, -1, 1, 1)
        std = torch.tensor(prep.std, device=device).view(1, -1, 1, 1)
        return to_model_input(images.to(device), mean, std)

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per task, (N, classes) probabilities for a uint8 (N, C, H, W) batch."""
        logits = self.model(self.inputs(images))
        return {task: class_scores(out.float()).cpu() for task, out in logits.items()}

    def to(self, device: str | torch.device) -> "TrainedModel":
        self.model.to(device)
        return self


def load_trained(ref: str, root: str = "runs") -> TrainedModel:
    """The best model of the finished training run `ref` (a run folder, or a run id under `root`)."""
    run = find_run(ref, root)
    return trained_from(run, run.job(), run.trained())


def trained_from(run: Run, job: JobSpec, summary: TrainSummary) -> TrainedModel:
    """The best model of `run`, given its job and summary (as a run that is just ending holds them)."""
    return TrainedModel(run, job, summary, _model(run, job, summary), preprocessing_of(job, summary, run.path))


def preprocessing_of(job: JobSpec, summary: TrainSummary, where: str) -> Preprocessing:
    """The preprocessing a run's model expects, from its summary (and, for runs from before cnnjobs recorded the
    normalization in it, from the shards' manifest)."""
    data = summary.data
    if data is None or not data.image_shape:
        raise JobError(f"{where}: the summary does not say what the model was trained on")
    mean, std = data.mean, data.std
    if not mean:
        from cnnjobs.data.pipeline import normalization
        from cnnjobs.data.shards import Manifest

        if not storage.exists(storage.join(data.shards, "dataset.json")):
            raise JobError(f"{where}: written by an older cnnjobs that did not record the normalization, and its "
                           f"shards ({data.shards}) are gone; train it again to use it")
        mean, std = normalization(job.data.normalize, Manifest.load(data.shards))
    height, width, channels = data.image_shape
    outputs = {task: job.model.heads[task].output if task in job.model.heads else "softmax" for task in data.classes}
    return Preprocessing((height, width), channels, list(mean), list(std), data.classes, outputs)


def _model(run: Run, job: JobSpec, summary: TrainSummary) -> MultiHead:
    from cnnjobs.models import build_model

    data = summary.data
    height, width, channels = data.image_shape
    model = build_model(job.model, dict(data.tasks), (height, width), channels, init_weights=False)
    location = run.file(layout.BEST_MODEL)
    try:
        state = torch.load(io.BytesIO(storage.read_bytes(location)), map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as exc:  # noqa: BLE001 - a truncated or foreign file: say which and why, in one line
        raise JobError(f"{location}: cannot load the model ({exc.__class__.__name__}: "
                       f"{str(exc).splitlines()[0][:150]})") from None
    return model.eval()


__all__ = ["BadImage", "Preprocessing", "TrainedModel", "load_trained", "preprocessing_of"]
