"""The driver side of a job: build the TorchTrainer from the spec, run it, and keep what it produced.

Ray objects are built from the spec here and nowhere else (ScalingConfig, RunConfig, DataConfig, TorchTrainer).
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import pyarrow.fs as pafs
import ray
import ray.data
import ray.train
from ray.data.dataset import MaterializedDataset
from ray.train.torch import TorchTrainer

from cnnjobs import storage
from cnnjobs.data.pipeline import build_datasets, normalization, stream_limits
from cnnjobs.data.shards import Manifest, skipped_csv
from cnnjobs.results import files
from cnnjobs.results.epochs import summarize_epochs
from cnnjobs.results.lifecycle import run_lifecycle
from cnnjobs.results.plots import save_plots
from cnnjobs.results.rundir import RunDir, utc_now
from cnnjobs.results.summary import DataFacts, TrainSummary
from cnnjobs.spec import JobSpec
from cnnjobs.train.launch import launch
from cnnjobs.train.loop import train_loop
from cnnjobs.train.progress import ProgressTracker, Snapshot

REPORT_POLL_S = "0.25"  # seconds between the Train controller's polls of the workers
IN_MEMORY_SHARE = 0.25  # of the object store, for datasets small enough to decode once and keep

ProgressCallback = Callable[[str, Snapshot | None, list[dict[str, Any]]], None]


@dataclass(frozen=True)
class RunResult:
    """What `submit` returns: the run folder and its summary."""

    run_dir: str
    summary: TrainSummary


def build_trainer(job: JobSpec, manifest: Manifest, run: RunDir, progress: Any, use_gpu: bool, *,
                  datasets: dict[str, ray.data.Dataset] | None = None,
                  callbacks: list[Any] = ()) -> TorchTrainer:
    """The TorchTrainer for `job`: one DDP worker per `scaling.num_workers`, checkpoints into the run folder.

    A search passes the `datasets` it built once for all trials, and Tune's report callback in `callbacks`.
    """
    # Train V2 workers queue one report at a time and the controller collects it only when it polls (every 2 s
    # by default): with short epochs every `report` waited for the poll. Ray passes this on to its controller.
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", REPORT_POLL_S)
    resources = {"CPU": job.scaling.cpus_per_worker, **({"GPU": 1} if use_gpu else {})}
    fs, _ = storage.resolve(run.location)
    datasets = datasets or training_datasets(job, manifest)
    # Materialized splits are also kept on the workers after their first pass (train/cache.py), except test, which
    # is read once. An augmented train split is a map over the materialized one, redrawn every epoch: not kept.
    kept = sorted(name for name, dataset in datasets.items() if isinstance(dataset, MaterializedDataset)
                  and name != "test")
    return TorchTrainer(
        train_loop,
        train_loop_config={"job": job, "manifest": manifest, "progress": progress, "keep_splits": kept},
        scaling_config=ray.train.ScalingConfig(num_workers=job.scaling.num_workers, use_gpu=use_gpu,
                                               resources_per_worker=resources),
        run_config=ray.train.RunConfig(
            name=run.run_id,
            storage_path=run.storage_parent,
            storage_filesystem=fs if storage.is_uri(run.location) else None,
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=job.train.keep_checkpoints, checkpoint_score_attribute=job.train.monitor,
                checkpoint_score_order=job.train.monitor_mode),  # the best K by the monitor, and always the last
            failure_config=ray.train.FailureConfig(max_failures=0),
            callbacks=list(callbacks),
        ),
        datasets=datasets,
        # Only the train split is divided among workers; every worker evaluates all of val and test.
        dataset_config=ray.train.DataConfig(datasets_to_split=["train"], execution_options=_ingest_options()),
    )


def in_memory_budget() -> int:
    """Bytes of decoded pixels that may be materialized: `IN_MEMORY_SHARE` of the cluster's object store."""
    return int(IN_MEMORY_SHARE * ray.cluster_resources().get("object_store_memory", 0))


def training_datasets(job: JobSpec, manifest: Manifest) -> dict[str, ray.data.Dataset]:
    """The job's datasets as training reads them: small splits materialized, the train split augmented."""
    return build_datasets(manifest, in_memory_bytes=in_memory_budget(), augment=job.data.augment,
                          seed=job.data.seed)


def _ingest_options() -> ray.data.ExecutionOptions:
    options = ray.train.DataConfig.default_ingest_options()
    options.preserve_order = True  # blocks arrive in the same order every run: same seed, same metrics
    options.resource_limits = stream_limits()  # memory flat in the dataset's size, as for the driver's reads
    return options


def data_facts(job: JobSpec, manifest: Manifest, cached: bool) -> DataFacts:
    """What a run records of its data: shards, shape, classes, rows, and the normalization the model saw."""
    mean, std = normalization(job.data.normalize, manifest)
    return DataFacts(shards=manifest.location, cached=cached, image_shape=list(manifest.image_shape),
                     tasks={task: len(classes) for task, classes in manifest.tasks.items()}, classes=manifest.tasks,
                     rows={split: manifest.num_rows(split) for split in manifest.files},
                     skipped=len(manifest.skipped), mean=list(mean), std=list(std))


def submit(job: JobSpec, *, address: str | None = None, on_progress: ProgressCallback | None = None) -> RunResult:
    """Run `job` to the end on Ray Train and return its summary.

    Connects to `address` (or `RAY_ADDRESS`), else starts a local Ray instance sized to this machine and stops it
    afterwards. Raises `JobError` for bad input and `TrainingFailed` when training itself fails.
    """
    submitted = time.time()
    notify = on_progress or (lambda *args: None)
    with launch(job, address, lambda phase: notify(phase, None, [])) as launched:
        manifest = launched.manifest
        run = RunDir.create(job.output.dir, job.name, job.to_yaml())
        launched.session.attach(run.logs_dir)
        if manifest.skipped:  # images and rows left out of the data, with the reason
            storage.write_text(run.path(files.SKIPPED), skipped_csv(manifest))
        summary = TrainSummary(job=job.name, run_id=run.run_id, run_dir=run.location, started=utc_now(),
                               monitor=job.train.monitor, mode=job.train.monitor_mode, arch=job.model.arch,
                               epochs=job.train.epochs, use_gpu=launched.use_gpu,
                               data=data_facts(job, manifest, launched.cached))
        rows: list[dict[str, Any]] = []

        def finish(final: TrainSummary) -> None:
            summarize_epochs(final, rows)
            if rows:
                run.write_metrics(rows)
                save_plots(run.location, final, rows)

        with run_lifecycle(run, summary, resume=f"cnnjobs submit --resume {run.location}", finish=finish):
            notify("starting workers", None, rows)
            tracker = ProgressTracker.remote()
            trainer = build_trainer(job, manifest, run, tracker, launched.use_gpu)
            result = _fit_with_progress(trainer, tracker, run, rows, notify)
            first_step = ray.get(tracker.poll.remote(len(rows))).first_step_at
            summary.to_first_step_s = round(first_step - submitted, 1) if first_step else None
            summary.first_step_at = first_step
            keep_best_model(result.checkpoint, run)
            summary.best_model = files.BEST_MODEL
    return RunResult(run.location, summary)


def _fit_with_progress(trainer: TorchTrainer, tracker: Any, run: RunDir, rows: list[dict[str, Any]],
                       notify: ProgressCallback) -> ray.train.Result:
    """Run `trainer.fit()` in a thread while polling the progress actor; epochs land in metrics.csv as they end."""
    outcome: dict[str, Any] = {}

    def fit() -> None:
        try:
            outcome["result"] = trainer.fit()
        except BaseException as exc:  # handed to the main thread below
            outcome["error"] = exc

    thread = threading.Thread(target=fit, name="cnnjobs-fit", daemon=True)
    thread.start()
    while True:
        thread.join(timeout=0.25)
        snapshot = ray.get(tracker.poll.remote(len(rows)))
        if snapshot.new_epochs:
            rows.extend(snapshot.new_epochs)
            run.write_metrics(rows)
        notify("training", snapshot, rows)
        if not thread.is_alive():
            break
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def keep_best_model(checkpoint: ray.train.Checkpoint | None, run: RunDir) -> None:
    """Copy the best weights out of the last checkpoint to `<run>/best_model.pt`."""
    if checkpoint is None:
        raise RuntimeError("training reported no checkpoint")
    fs = checkpoint.filesystem
    best = f"{checkpoint.path}/{files.CHECKPOINT_BEST}"
    source = best if fs.get_file_info(best).type == pafs.FileType.File else \
        f"{checkpoint.path}/{files.CHECKPOINT_MODEL}"
    target_fs, target = storage.resolve(run.path(files.BEST_MODEL))
    if isinstance(fs, pafs.LocalFileSystem) and isinstance(target_fs, pafs.LocalFileSystem):
        shutil.copyfile(source, target)
    else:
        pafs.copy_files(source, target, source_filesystem=fs, destination_filesystem=target_fs)
