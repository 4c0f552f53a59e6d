"""Every file and folder name inside a run folder `<output.dir>/<job name>/<run id>/`, defined once.

    job.yaml              the job as it ran (defaults filled in, --set applied)
    summary.json          the typed summary (`results.summary`): status, best epoch, metrics, ...
    metrics.csv           one row per epoch
    best_model.pt         the best epoch's state dict
    skipped.csv           images and rows left out of the data, with the reason
    checkpoint_epoch-N/   checkpoints: model.pt, state.pt (optimizer, schedule, counters), best_model.pt
    logs/                 ray.log, cnnjobs.log (tracebacks), ray_session.txt
    tensorboard/          TensorBoard event files (one folder per trial for a search)
    *.png                 plots: learning curves, confusion matrices, image grids
    export/               `cnnjobs export`: model.pt (TorchScript) or model.onnx, and model.preprocessing.json
    visualize/<image>/    `cnnjobs visualize`: a feature-map grid per layer, prediction.png, gradcam_<task>.png
    tune_results.csv, best_job.yaml, tune/, trials/<trial id>/    a search's results, Tune state and trial runs
"""

from __future__ import annotations

JOB = "job.yaml"
SUMMARY = "summary.json"
METRICS = "metrics.csv"
BEST_MODEL = "best_model.pt"
SKIPPED = "skipped.csv"

CHECKPOINT_PREFIX = "checkpoint_"
CHECKPOINT_MODEL = "model.pt"  # inside a checkpoint: the epoch's weights
CHECKPOINT_STATE = "state.pt"  # optimizer, schedule, scaler, early-stopping and best-epoch counters
CHECKPOINT_BEST = "best_model.pt"  # the best weights so far, when not this epoch's

LOGS = "logs"
RAY_LOG = "ray.log"
CNNJOBS_LOG = "cnnjobs.log"
RAY_SESSION = "ray_session.txt"
TENSORBOARD = "tensorboard"

CURVES = "learning_curves.png"
PREDICTIONS = "predictions.png"
AUGMENTED = "augmented.png"

TUNE_RESULTS = "tune_results.csv"
BEST_JOB = "best_job.yaml"
TUNE_EXPERIMENT = "tune"
TRIALS = "trials"


def checkpoint_dir(epoch: int) -> str:
    """The folder name of the checkpoint taken after `epoch` (sorts by epoch)."""
    return f"{CHECKPOINT_PREFIX}epoch-{epoch:04d}"


def checkpoint_epoch(name: str) -> int | None:
    """The epoch of a checkpoint folder name written by `checkpoint_dir`, else None."""
    prefix = f"{CHECKPOINT_PREFIX}epoch-"
    return int(name[len(prefix):]) if name.startswith(prefix) and name[len(prefix):].isdigit() else None


def confusion_png(task: str) -> str:
    """The confusion matrix plot of one task."""
    return f"confusion_{task}.png"


EXPORT_DIR = "export"
EXPORT_MODEL = {"torchscript": "model.pt", "onnx": "model.onnx"}
PREPROCESSING_SUFFIX = ".preprocessing.json"  # model.onnx -> model.preprocessing.json
VISUALIZE_DIR = "visualize"  # one sub-folder per image (its file name's stem)
PREDICTION_PNG = "prediction.png"


def gradcam_png(task: str) -> str:
    """The Grad-CAM heat map of one task written by `cnnjobs visualize --cam`."""
    return f"gradcam_{task}.png"


def feature_maps_png(index: int, layer: str) -> str:
    """One layer's feature-map grid written by `cnnjobs visualize`."""
    return f"features_{index:02d}_{layer.replace('.', '_')}.png"
