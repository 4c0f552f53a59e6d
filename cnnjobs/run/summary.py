"""`summary.json`, typed: what a run is and what it measured. Written by `submit` and `search`, read by every view.

A summary has a `schema_version`. Version 1 (cnnjobs 0.1, before this module existed) had no version field,
`test_confusion`/`test_per_class` instead of `confusion`/`per_class`, and `stopped_early` as a count for
searches; `parse_summary` upgrades it. A summary written by a newer cnnjobs is refused with a clear message.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from cnnjobs.errors import JobError
from cnnjobs.metrics import per_class_precision

SCHEMA_VERSION = 2
Status = Literal["running", "succeeded", "failed", "interrupted"]


class _Model(BaseModel):
    # Fields added within a version are optional, so an older cnnjobs can still read a newer file of its version.
    model_config = ConfigDict(extra="ignore", validate_assignment=True)


class TaskMetrics(_Model):
    """Metrics of one task on one split (`top5` only for tasks with more than five classes)."""

    loss: float | None = None
    acc: float | None = None
    f1: float | None = None
    top5: float | None = None


class SplitMetrics(TaskMetrics):
    """A split's combined metrics (loss: weighted sum over tasks; acc, f1: means) and each task's."""

    tasks: dict[str, TaskMetrics] = Field(default_factory=dict)


class ClassRow(_Model):
    """One class of a task on the evaluated split: images, hits, recall (seed 003's table) and precision."""

    name: str
    count: int
    correct: int
    recall: float | None = None  # share of the class's images predicted right
    precision: float | None = None  # share of the predictions of this class that were right


class DataFacts(_Model):
    """What the run trained on, and the preprocessing a model of it needs (prediction and export read it)."""

    shards: str
    cached: bool = False
    image_shape: list[int] = Field(default_factory=list)  # height, width, channels
    tasks: dict[str, int] = Field(default_factory=dict)  # task -> number of classes
    classes: dict[str, list[str]] = Field(default_factory=dict)
    rows: dict[str, int] = Field(default_factory=dict)
    skipped: int = 0
    mean: list[float] = Field(default_factory=list)  # per channel, 0-1 scale, as the model saw it
    std: list[float] = Field(default_factory=list)


class Restart(_Model):
    """A time training went on after a failure or an interruption."""

    at: str  # ISO time
    from_epoch: int  # the epoch of the checkpoint it continued after
    reason: str  # "worker failure" or "resume"


class Timing(_Model):
    """Where a worker's time went over the run (the data-wait doctor): seconds per step, and the verdict."""

    wait_s: float = 0.0  # waiting for the next batch
    compute_s: float = 0.0  # forward, backward, optimizer step
    sync_s: float = 0.0  # all-reduce, evaluation sync and reporting
    verdict: str | None = None


class MlflowFacts(_Model):
    """Where a run is tracked in MLflow, and what of it the tracking server has not received."""

    tracking_uri: str | None = None  # None: MLflow's default
    experiment: str
    experiment_id: str | None = None
    run_id: str | None = None  # a `--resume` continues this MLflow run
    unsent_epochs: list[int] = Field(default_factory=list)  # epochs the server did not get (sent by a `--resume`)
    error: str | None = None  # why, when the server did not answer at the end


class _Common(_Model):
    schema_version: int = SCHEMA_VERSION
    job: str
    run_id: str
    run_dir: str
    status: Status = "running"
    started: str
    finished: str | None = None
    duration_s: float | None = None
    monitor: str
    mode: Literal["min", "max"]
    epochs: int
    epochs_run: int = 0
    best_metric: float | None = None
    arch: str | None = None
    use_gpu: bool | None = None
    error: str | None = None
    resume: str | None = None  # the command that continues an interrupted run
    data: DataFacts | None = None
    mlflow: MlflowFacts | None = None  # tracked in MLflow (output.mlflow or MLFLOW_TRACKING_URI)


class TrainSummary(_Common):
    """A training run (`cnnjobs submit`)."""

    kind: Literal["train"] = "train"
    in_process: bool | None = None
    driver: str | None = None  # host:pid of the process that trains (or waits on the workers)
    ray: str | None = None  # the Ray instance it ran on, in words (started for it, warm, a cluster)
    workers: list[str] = Field(default_factory=list)  # the Ray node id of each worker, by rank
    best_epoch: int | None = None
    stopped_early: bool = False
    metrics: dict[str, SplitMetrics] = Field(default_factory=dict)  # train/val at the best epoch, test at the end
    evaluated: Literal["test", "val"] | None = None  # the split of `confusion` and `per_class`
    confusion: dict[str, list[list[int]]] = Field(default_factory=dict)
    per_class: dict[str, list[ClassRow]] = Field(default_factory=dict)
    best_model: str | None = None
    to_first_step_s: float | None = None
    first_step_at: float | None = None
    restarts: list[Restart] = Field(default_factory=list)
    timing: Timing | None = None


class BestTrial(_Model):
    """The winning trial of a search."""

    trial: str
    values: dict[str, Any]
    epochs: int
    best_epoch: int | None = None
    test_acc: float | None = None


class TuneSummary(_Common):
    """A search (`cnnjobs tune`)."""

    kind: Literal["tune"] = "tune"
    scheduler: Literal["asha", "none"]
    trials: int
    space: dict[str, dict[str, Any]]
    concurrency: int | None = None
    concurrency_reason: str | None = None
    most_running: int = 0
    trials_stopped_early: int = 0
    best_trial: BestTrial | None = None
    best_job: str | None = None
    best_model: str | None = None


RunSummary = Annotated[Union[TrainSummary, TuneSummary], Field(discriminator="kind")]
_ADAPTER: TypeAdapter[TrainSummary | TuneSummary] = TypeAdapter(RunSummary)


def parse_summary(raw: Any, where: str) -> TrainSummary | TuneSummary:
    """A summary from its JSON content, upgraded from older versions; JobError naming `where` if it is not one."""
    if not isinstance(raw, dict):
        raise JobError(f"{where}: not a cnnjobs run summary")
    version = raw.get("schema_version", 1)
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise JobError(f"{where}: written by a newer cnnjobs (summary schema {version}; this one reads up to "
                       f"{SCHEMA_VERSION}); upgrade cnnjobs to read it")
    if version == 1:
        raw = _from_v1(raw)
    try:
        return _ADAPTER.validate_python(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise JobError(f"{where}: not a cnnjobs run summary ({'.'.join(map(str, first['loc']))}: "
                       f"{first['msg']})") from None


def _from_v1(raw: dict[str, Any]) -> dict[str, Any]:
    """Version 1 -> 2: the renamed fields; everything else had the same name and meaning."""
    out = {key: value for key, value in raw.items()
           if key not in ("test_confusion", "test_per_class", "stopped_early")}
    out["schema_version"] = SCHEMA_VERSION
    out.setdefault("kind", "train")
    if out["kind"] == "tune":
        out["trials_stopped_early"] = raw.get("stopped_early") or 0
        return out
    out["stopped_early"] = bool(raw.get("stopped_early"))
    if raw.get("test_confusion"):
        out["confusion"], out["evaluated"] = raw["test_confusion"], "test"
    out["per_class"] = {}
    for task, rows in (raw.get("test_per_class") or {}).items():
        confusion = (raw.get("test_confusion") or {}).get(task)
        # Version 1 kept no precision; the confusion matrix it kept gives it back.
        precision = per_class_precision(np.asarray(confusion)) if confusion else [np.nan] * len(rows)
        out["per_class"][task] = [{"name": row["class"], "count": row["count"], "correct": row["correct"],
                                   "recall": row.get("acc"), "precision": None if np.isnan(p) else float(p)}
                                  for row, p in zip(rows, precision)]
    return out
