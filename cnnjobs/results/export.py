"""A run's best model as a file that loads and predicts without cnnjobs: TorchScript (`torch.jit.load`) or ONNX
(any ONNX runtime), with the preprocessing it expects written beside it as JSON.

The exported function takes a normalized float32 (N, C, H, W) batch, any N, and returns the per-class
probabilities of every task, in the order the JSON lists them. Before anything is written, the export is loaded
back and compared with the run's own model on real images of the run's data: nothing is kept unless the largest
absolute difference in probabilities is within `TOLERANCE`.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from cnnjobs import storage
from cnnjobs.errors import JobError
from cnnjobs.models.heads import MultiHead, class_scores
from cnnjobs.results.trained import TrainedModel, load_trained
from cnnjobs.run import layout

# Probabilities lie in [0, 1]; float32 kernels that add in another order (fused conv + BatchNorm, ONNX Runtime's
# own softmax) differ by ~1e-7 to 1e-6, while a real export fault (dropout left on, a wrong op) shows as > 1e-2.
TOLERANCE = 1e-4
CHECK_IMAGES = 64  # of the test split, else the val split
OPSET = 18  # the opset torch.onnx's exporter implements natively (TORCHLIB_OPSET): no version conversion
INPUT_NAME = "images"
# torch 2.14 deprecates TorchScript (for torch.export); the format is still the one that loads with torch alone.
_JIT_DEPRECATED = r".*torch\.jit\.\w+` is deprecated"

Format = Literal["torchscript", "onnx"]


class ExportMismatch(JobError):
    """The exported model does not compute what the run's model does; nothing was written."""


@dataclass(frozen=True)
class Exported:
    """Where an export went and what its check found."""

    model: str  # the model file
    preprocessing: str  # the JSON beside it
    format: Format
    max_difference: float  # largest |exported - run's model| over the probabilities of the checked images
    images: int  # how many images the check compared
    split: str  # the split they came from
    tolerance: float = TOLERANCE


class _Probabilities(nn.Module):
    """The run's MultiHead as one plain function: normalized images -> a tuple of per-task probabilities.

    A tuple (not the model's dict) because ONNX outputs are positional; their names are the tasks.
    """

    def __init__(self, model: MultiHead) -> None:
        super().__init__()
        self.model = model
        self.tasks = list(model.heads)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits = self.model(images)
        return tuple(class_scores(logits[task]) for task in self.tasks)


def export(ref: str, fmt: Format, out: str | None = None, root: str = "runs") -> Exported:
    """Export the best model of the finished run `ref` (a folder or a run id under `root`) as `fmt`, to `out`
    (default: `<run>/export/model.pt|model.onnx`), with `<model name>.preprocessing.json` beside it.

    JobError for a run without a best model, missing shards or missing ONNX packages; ExportMismatch when the
    written model differs from the run's by more than `TOLERANCE`.
    """
    if fmt not in layout.EXPORT_MODEL:
        raise JobError(f"export: unknown format {fmt!r}; expected one of {', '.join(layout.EXPORT_MODEL)}")
    if fmt == "onnx":
        _require_onnx()  # before the slow part, so a missing package is the first thing said
    trained = load_trained(ref, root)
    split, images = _check_images(trained)
    target = _target(out, trained, fmt)
    sidecar = preprocessing_path(target)
    module = _Probabilities(trained.model).eval()
    inputs = trained.inputs(images)
    # Two example rows, never one: torch.export would specialize a batch of one to a fixed size.
    example = inputs[[0, -1]]
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, os.path.basename(target))
        if fmt == "torchscript":
            _write_torchscript(module, example, local)
            outputs = _run_torchscript(local, inputs)
        else:
            _write_onnx(module, example, local)
            outputs = _run_onnx(local, inputs, module.tasks)
        reference = trained.probabilities(images)
        difference = max(float((out_ - reference[task]).abs().max())
                         for task, out_ in zip(module.tasks, outputs, strict=True))
        if not difference <= TOLERANCE:  # NaN fails too
            raise ExportMismatch(f"{target}: the {fmt} model differs from the run's by {difference:.2g} (tolerance "
                                 f"{TOLERANCE:g}) on {len(images)} {split} images; nothing written")
        result = Exported(target, sidecar, fmt, difference, len(images), split)
        storage.write_bytes(target, Path(local).read_bytes())
        storage.write_text(sidecar, json.dumps(preprocessing_json(trained, module.tasks), indent=2) + "\n")
    return result


def preprocessing_path(model_path: str) -> str:
    """The JSON written beside a model file: `dir/model.onnx` -> `dir/model.preprocessing.json`."""
    return os.path.splitext(model_path)[0] + layout.PREPROCESSING_SUFFIX


def preprocessing_json(trained: TrainedModel, tasks: list[str]) -> dict:
    """Everything needed to feed the exported model an image file and read its outputs, without cnnjobs.

    The same for both formats, so a TorchScript and an ONNX export in one folder share it.
    """
    prep, summary = trained.preprocessing, trained.summary
    height, width = prep.image_size
    mode = "RGB" if prep.channels == 3 else "L"
    return {
        "input": {"name": INPUT_NAME, "layout": "NCHW", "dtype": "float32",
                  "shape": ["batch", prep.channels, height, width]},
        "image": {
            "height": height, "width": width, "channels": prep.channels, "mode": mode,
            "steps": [  # what cnnjobs.data.decode.to_pixels does, in order
                "apply the EXIF orientation (PIL: ImageOps.exif_transpose)",
                "16/32-bit grayscale: scale the value range to 0-255",
                "transparency (RGBA, LA, palette with transparency): composite on opaque white",
                "convert to RGB" if mode == "RGB" else
                "convert to 8-bit grayscale, L = R * 299/1000 + G * 587/1000 + B * 114/1000 (PIL: convert('L'))",
                (f"unless already {width}x{height}: resize to exactly width {width}, height {height}, bilinear "
                 f"(PIL: image.resize(({width}, {height}), Image.Resampling.BILINEAR))"),
                "pixels (H, W, C) uint8 -> (C, H, W) float32 -> (pixel / 255 - mean[c]) / std[c]",
            ],
            "resize": {"method": "bilinear", "library": "PIL", "height": height, "width": width},
        },
        "normalize": {"scale": 1 / 255, "mean": prep.mean, "std": prep.std,
                      "formula": "(pixel / 255 - mean[c]) / std[c]"},
        "outputs": [{"name": task, "classes": prep.classes[task], "values": "probabilities, one column per class",
                     "head": prep.outputs[task]} for task in tasks],
        "source": {"run_id": summary.run_id, "job": summary.job, "arch": summary.arch,
                   "best_epoch": summary.best_epoch, "run_dir": trained.run.path},
    }


def _require_onnx() -> None:
    try:
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401 - torch.onnx's exporter (dynamo=True) translates through it
    except ImportError as exc:
        raise JobError(f"export --format onnx: {exc.name} is not installed; pip install 'cnnjobs[export]'") from None


def _check_images(trained: TrainedModel) -> tuple[str, torch.Tensor]:
    """The first `CHECK_IMAGES` uint8 images of the run's test split (val when it has no test images)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from cnnjobs.data.pipeline import decode_images
    from cnnjobs.data.shards import MANIFEST, Manifest

    shards = trained.summary.data.shards
    if not storage.exists(storage.join(shards, MANIFEST)):
        raise JobError(f"{trained.run.path}: the run's shards ({shards}) are gone, so the export cannot be checked; "
                       f"write them again: cnnjobs data prepare {trained.run.file(layout.JOB)}")
    manifest = Manifest.load(shards)
    split = "test" if manifest.num_rows("test") else "val"  # every dataset has val images (shards.py checks)
    fs, path = storage.resolve(manifest.paths(split)[0])
    with fs.open_input_file(path) as source:
        batch = next(pq.ParquetFile(source).iter_batches(batch_size=CHECK_IMAGES, columns=["image"]))
    pixels = decode_images(pa.Table.from_batches([batch]), manifest.image_shape)["image"]
    return split, torch.from_numpy(pixels)


def _target(out: str | None, trained: TrainedModel, fmt: Format) -> str:
    name = layout.EXPORT_MODEL[fmt]
    if out is None:
        return trained.run.file(storage.join(layout.EXPORT_DIR, name))
    from pyarrow.fs import FileType

    fs, path = storage.resolve(out)
    is_dir = out.endswith("/") or fs.get_file_info(path).type == FileType.Directory
    return storage.join(out, name) if is_dir else out


def _write_torchscript(module: _Probabilities, example: torch.Tensor, path: str) -> None:
    # Tracing, not scripting: the models are straight feed-forward, and the one branch (a sigmoid head's single
    # logit -> two columns) depends on a head's fixed width, so the trace records the right path; scripting would
    # demand that every registered backbone (torchvision's included) be TorchScript-compatible Python.
    with warnings.catch_warnings(), torch.no_grad():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)  # that branch, constant by design
        warnings.filterwarnings("ignore", message=_JIT_DEPRECATED)
        torch.jit.save(torch.jit.trace(module, example), path)


def _run_torchscript(path: str, inputs: torch.Tensor) -> list[torch.Tensor]:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.filterwarnings("ignore", message=_JIT_DEPRECATED)
        return list(torch.jit.load(path, map_location="cpu")(inputs))


def _write_onnx(module: _Probabilities, example: torch.Tensor, path: str) -> None:
    if INPUT_NAME in module.tasks:
        raise JobError(f"export --format onnx: a task named {INPUT_NAME!r} clashes with the model's input name")
    # The torch.export-based exporter (dynamo=True, the default since torch 2.9; the TorchScript-based one is
    # deprecated): it needs onnxscript. Weights stay inside the one .onnx file (external_data=False).
    torch.onnx.export(module, (example,), path, input_names=[INPUT_NAME], output_names=module.tasks,
                      dynamic_shapes={"images": {0: torch.export.Dim("batch")}},  # forward's argument: any N
                      opset_version=OPSET, external_data=False, dynamo=True, verbose=False)


def _run_onnx(path: str, inputs: torch.Tensor, tasks: list[str]) -> list[torch.Tensor]:
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    return [torch.from_numpy(out) for out in session.run(tasks, {INPUT_NAME: inputs.numpy()})]


__all__ = ["TOLERANCE", "ExportMismatch", "Exported", "export", "preprocessing_json", "preprocessing_path"]
