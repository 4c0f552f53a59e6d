"""`cnnjobs predict RUN PATH...`: a run's best model on new images, with exactly the training preprocessing.

Files, folders (searched recursively) and glob patterns are accepted. A folder whose subfolders are named after
the classes of a task (`<class>/<image>`, as the image_folder source reads them), or a CSV table in the layout of
the job's own CSV source (its `images` template and label columns), is labeled: the result then also holds the
accuracy and the confusion matrix per task, which evaluates the run on new labeled data.

Up to `RAY_THRESHOLD` images run here, in this process, without starting Ray. More run as Ray Data batch
inference, Ray's documented offline-inference pattern: the files are read and decoded by tasks, and an actor pool
(`map_batches` with a class) loads the model once per actor and predicts batches, with a GPU per actor when the
cluster has GPUs. Files that cannot be read as images are listed with the reason and skipped; they never stop
the others.
"""

from __future__ import annotations

import csv
import glob
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from cnnjobs.data.decode import BadImage, load_pixels
from cnnjobs.errors import JobError
from cnnjobs.results.trained import TrainedModel, load_trained
from cnnjobs.run.folder import local_logs, upload_logs
from cnnjobs.spec import CsvSource

RAY_THRESHOLD = 1000  # images: fewer are predicted here (starting Ray costs 5-10 s, ~3,000 LeNet predictions)
BATCH = 64
IMAGE_SUFFIXES = frozenset(Image.registered_extensions())  # what a folder scan takes (a README is not skipped)


@dataclass
class Prediction:
    """One image: the top classes of every task with their probabilities, and its true labels when known."""

    path: str
    top: dict[str, list[tuple[str, float]]]  # task -> [(class, probability)], best first
    truth: dict[str, str] = field(default_factory=dict)


@dataclass
class Predictions:
    """What `predict` returns."""

    run_id: str
    job: str
    mode: str  # "in-process" or "ray-data"
    rows: list[Prediction]
    skipped: list[tuple[str, str]]  # (path, reason)
    accuracy: dict[str, float] = field(default_factory=dict)  # per task, when the images are labeled
    confusion: dict[str, list[list[int]]] = field(default_factory=dict)
    classes: dict[str, list[str]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "job": self.job, "mode": self.mode, "accuracy": self.accuracy,
                "confusion": self.confusion, "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
                "predictions": [{"path": p.path, "truth": p.truth,
                                 "top": {t: [{"class": c, "probability": v} for c, v in top]
                                         for t, top in p.top.items()}} for p in self.rows]}


def predict(ref: str, paths: list[str], *, top_k: int = 3, root: str = "runs", use_ray: bool | None = None,
            address: str | None = None) -> Predictions:
    """Predict every image under `paths` with the best model of the run `ref` (see the module docstring).

    `use_ray` forces the Ray Data path (True) or the in-process one (False); None decides by `RAY_THRESHOLD`.
    """
    trained = load_trained(ref, root)
    files, truth, skipped = gather(paths, trained)
    if not files:
        raise JobError(f"{' '.join(paths)}: no image files to predict" + (f" ({len(skipped)} skipped)" if skipped
                                                                           else ""))
    ray_path = use_ray if use_ray is not None else len(files) > RAY_THRESHOLD
    if ray_path:
        probabilities, failed = _on_ray(trained, files, address)
    else:
        probabilities, failed = _in_process(trained, files)
    skipped += failed
    classes = trained.preprocessing.classes
    rows = []
    for path, probs in probabilities:
        top = {task: [(classes[task][i], float(p[i])) for i in np.argsort(-p, kind="stable")[:top_k]]
               for task, p in probs.items()}
        rows.append(Prediction(path, top, truth.get(path, {})))
    result = Predictions(trained.summary.run_id, trained.summary.job, "ray-data" if ray_path else "in-process", rows,
                         skipped, classes=classes)
    _score(result)
    return result


def gather(paths: list[str], trained: TrainedModel) -> tuple[list[str], dict[str, dict[str, str]], list]:
    """The image files named by `paths` (files, folders, globs, labeled CSV tables), their true labels when the
    layout gives them, and what was skipped with the reason."""
    files: list[str] = []
    truth: dict[str, dict[str, str]] = {}
    skipped: list[tuple[str, str]] = []
    for pattern in paths:
        matches = sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else [pattern]
        if not matches:
            raise JobError(f"{pattern}: matches no file")
        for match in matches:
            path = Path(match)
            if not path.exists():
                raise JobError(f"{match}: no such file or folder")
            if path.is_dir():
                found = _folder(path, trained.preprocessing.classes)
                files += [f for f, _ in found]
                truth.update({f: labels for f, labels in found if labels})
            elif path.suffix.lower() == ".csv":
                rows, bad = _table(path, trained)
                files += [f for f, _ in rows]
                truth.update(dict(rows))
                skipped += bad
            else:
                files.append(str(path))
    return list(dict.fromkeys(files)), truth, skipped


def _folder(folder: Path, classes: dict[str, list[str]]) -> list[tuple[str, dict[str, str]]]:
    """Image files under `folder`; labeled by their class subfolder when every subfolder names a class of one
    task."""
    images = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                    and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    subfolders = {p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")}
    task = next((t for t, names in classes.items() if subfolders and subfolders <= set(names)), None)
    return [(str(p), {task: p.relative_to(folder).parts[0]} if task and len(p.relative_to(folder).parts) > 1 else {})
            for p in images]


def _table(table: Path, trained: TrainedModel) -> tuple[list[tuple[str, dict[str, str]]], list[tuple[str, str]]]:
    """Rows of a CSV in the layout of the job's CSV source, read as training read it: the image path from its
    template, the labels from its columns (malformed rows and missing images are skipped with the reason)."""
    from cnnjobs.data.sources import csv_rows

    source = trained.job.data.source
    if not isinstance(source, CsvSource):
        raise JobError(f"{table}: a CSV table is read with the job's own CSV layout, and {trained.job.name} trained "
                       f"on {source.type} data; give the image files or folders instead")
    rows, skipped = csv_rows(table, source)
    return [(str(image), {task: values[task] for task in source.labels}) for image, values in rows], skipped


def _in_process(trained: TrainedModel, files: list[str]) -> tuple[list[tuple[str, dict[str, np.ndarray]]], list]:
    out, skipped = [], []
    for start in range(0, len(files), BATCH):
        batch, names = [], []
        for path in files[start:start + BATCH]:
            try:
                batch.append(trained.pixels(path))
                names.append(path)
            except BadImage as exc:
                skipped.append((path, str(exc)))
        if batch:
            probs = trained.probabilities(torch.from_numpy(np.stack(batch)))
            out += [(name, {task: p[i].numpy() for task, p in probs.items()}) for i, name in enumerate(names)]
    return out, skipped


class _Predictor:
    """A Ray Data actor: the run's model, loaded once, predicting decoded batches."""

    def __init__(self, run_path: str) -> None:
        self.trained = load_trained(run_path)
        if torch.cuda.is_available():
            self.trained.to("cuda")

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        good = batch["ok"]
        out: dict[str, np.ndarray] = {"path": batch["path"], "error": batch["error"]}
        images = torch.from_numpy(np.ascontiguousarray(batch["image"][good]))
        probs = self.trained.probabilities(images) if good.any() else {}
        for task, names in self.trained.preprocessing.classes.items():
            column = np.zeros((len(good), len(names)), np.float32)
            if good.any():
                column[good] = probs[task].numpy()
            out[f"p_{task}"] = column
        return out


def _decode(batch: dict[str, np.ndarray], shape: tuple[int, int, int]) -> dict[str, np.ndarray]:
    """Ray Data task: file bytes -> the model's uint8 (C, H, W) input; unreadable files are flagged, not fatal."""
    h, w, c = shape
    images = np.zeros((len(batch["path"]), c, h, w), np.uint8)
    ok, errors = np.zeros(len(images), bool), []
    for i, raw in enumerate(batch["bytes"]):
        try:
            images[i] = load_pixels(lambda raw=raw: Image.open(io.BytesIO(raw)), shape).transpose(2, 0, 1)
            ok[i] = True
            errors.append("")
        except BadImage as exc:
            errors.append(str(exc))
    return {"path": batch["path"], "image": images, "ok": ok, "error": np.array(errors, dtype=object)}


def _on_ray(trained: TrainedModel, files: list[str], address: str | None) -> tuple[list, list]:
    import ray
    import ray.data

    from cnnjobs.session import ray_session

    logs = os.path.join(local_logs(trained.run.path), "predict")  # a remote run's: uploaded when done
    with ray_session(address) as session:
        session.attach(logs)
        gpus = ray.cluster_resources().get("GPU", 0)
        actors = max(1, int(gpus) if gpus else min(4, int(ray.cluster_resources().get("CPU", 1)) - 1))
        dataset = ray.data.read_binary_files(files, include_paths=True, override_num_blocks=max(1, len(files) // 256))
        decoded = dataset.map_batches(_decode, fn_kwargs={"shape": trained.preprocessing.shape}, batch_size=BATCH)
        predicted = decoded.map_batches(_Predictor, fn_constructor_kwargs={"run_path": trained.run.path},
                                        batch_size=BATCH, compute=ray.data.ActorPoolStrategy(size=actors),
                                        num_gpus=1 if gpus else 0, max_restarts=0)
        found = {row["path"]: row for row in predicted.iter_rows()}
    upload_logs(trained.run.path, logs)
    out, skipped = [], []
    for path in files:  # back in the order the files were given
        row = found.get(os.path.abspath(path)) or found.get(path)
        if row is None or row["error"]:
            skipped.append((path, row["error"] if row else "not read"))
            continue
        out.append((path, {task: np.asarray(row[f"p_{task}"]) for task in trained.preprocessing.classes}))
    return out, skipped


def _score(result: Predictions) -> None:
    """Accuracy and confusion per task over the labeled predictions."""
    for task, names in result.classes.items():
        labeled = [row for row in result.rows if task in row.truth]
        if not labeled:
            continue
        index = {name: i for i, name in enumerate(names)}
        matrix = np.zeros((len(names), len(names)), np.int64)
        for row in labeled:
            if row.truth[task] in index:
                matrix[index[row.truth[task]], index[row.top[task][0][0]]] += 1
        result.confusion[task] = matrix.tolist()
        result.accuracy[task] = float(np.trace(matrix)) / max(int(matrix.sum()), 1)


def write(result: Predictions, out: str) -> str:
    """`--out preds.csv` (one row per image: top class, probability and top-k per task, the truth) or `.json`."""
    if out.endswith(".json"):
        import json

        Path(out).write_text(json.dumps(result.to_json(), indent=1))
        return out
    if not out.endswith(".csv"):
        raise JobError(f"--out {out}: give a .csv or a .json file")
    tasks = list(result.classes)
    with open(out, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", *[c for t in tasks for c in (t, f"{t}_probability", f"{t}_top", f"{t}_true")]])
        for row in result.rows:
            writer.writerow([row.path, *[value for t in tasks for value in (
                row.top[t][0][0], f"{row.top[t][0][1]:.6f}", "|".join(c for c, _ in row.top[t]),
                row.truth.get(t, ""))]])
    return out


__all__ = ["RAY_THRESHOLD", "Prediction", "Predictions", "gather", "predict", "write"]
