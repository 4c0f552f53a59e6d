"""The driver side of a job: build the TorchTrainer from the spec, run it, and keep what it produced.

Ray objects are built from the spec here and nowhere else (ScalingConfig, RunConfig, DataConfig, TorchTrainer).
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterator

import ray
import ray.data
import ray.train
import torch
from ray.train.torch import TorchConfig, TorchTrainer

from cnnjobs.data.pipeline import TrainingData, build_datasets, normalization, stream_limits
from cnnjobs.data.shards import Manifest, skipped_csv
from cnnjobs.results.epochs import summarize_epochs
from cnnjobs.results.pictures import draw
from cnnjobs.results.tracking import Tracking
from cnnjobs.run import checkpoints, layout
from cnnjobs.run.folder import RunDir, utc_now
from cnnjobs.run.lifecycle import run_lifecycle
from cnnjobs.run.summary import DataFacts, Restart, Timing, TrainSummary
from cnnjobs.spec import JobSpec
from cnnjobs.train import collectives
from cnnjobs.train.epoch import StopRequested
from cnnjobs.train.launch import Launch, launch
from cnnjobs.train.loop import LoopConfig, train_loop
from cnnjobs.train.progress import ProgressTracker, Snapshot
from cnnjobs.train.timing import PARTS, verdict

REPORT_POLL_S = "0.25"  # seconds between the Train controller's polls of the workers
IN_MEMORY_SHARE = 0.25  # of the object store, for datasets small enough to decode once and keep

ProgressCallback = Callable[[str, Snapshot | None, list[dict[str, Any]]], None]


@dataclass(frozen=True)
class RunResult:
    """What `submit` returns: the run folder and its summary."""

    run_dir: str
    summary: TrainSummary


@dataclass
class Reopened:
    """An earlier run to continue (`submit --resume`): its folder, summary and the epochs it keeps."""

    run: RunDir
    summary: TrainSummary
    rows: list[dict[str, Any]] = field(default_factory=list)  # the epochs it keeps, up to its checkpoint
    recorded: list[dict[str, Any]] = field(default_factory=list)  # metrics.csv's rows (see checkpoints.resumable)
    notes: list[str] = field(default_factory=list)  # where it continues from, and damaged checkpoints passed over


class _Ingest(ray.train.DataConfig):
    """How the splits reach the workers: kept splits whole to every worker (each takes its rows by index, see
    `train/cache.py`), a streamed train split in equal parts (DDP needs the same number of steps everywhere),
    streamed validation and test splits in parts that together hold every row exactly once (their counts are
    summed over the workers, so N workers evaluate N times faster and agree with one)."""

    def configure(self, datasets: dict[str, ray.data.Dataset], world_size: int, worker_handles: Any,
                  worker_node_ids: Any, **kwargs: Any) -> list[dict[str, Any]]:
        output: list[dict[str, Any]] = [{} for _ in range(world_size)]
        for name, dataset in datasets.items():
            dataset = dataset.copy(dataset)
            dataset.context.execution_options = self._resolve_execution_options(name)
            if name in self._datasets_to_split:
                parts = dataset.streaming_split(world_size, equal=name == "train", locality_hints=worker_node_ids)
            else:
                parts = [dataset.iterator() for _ in range(world_size)]
            for rank, part in enumerate(parts):
                output[rank][name] = part
        return output


def runs_in_process(job: JobSpec, launched: Launch) -> bool:
    """`scaling.in_process`, with `auto` deciding: one CPU worker on a single-node Ray on this machine."""
    if job.scaling.in_process != "auto":
        return bool(job.scaling.in_process)
    return job.scaling.num_workers == 1 and not launched.use_gpu and launched.session.local


def training_data(job: JobSpec, manifest: Manifest) -> TrainingData:
    """The job's datasets as training reads them: small splits decoded once and kept by the workers."""
    budget = int(IN_MEMORY_SHARE * ray.cluster_resources().get("object_store_memory", 0))
    return build_datasets(manifest, in_memory_bytes=budget, workers=job.scaling.num_workers)


def build_trainer(loop: LoopConfig, data: TrainingData, run: RunDir, use_gpu: bool, *,
                  callbacks: list[Any] = ()) -> TorchTrainer:
    """The TorchTrainer for `loop.job`: one DDP worker per `scaling.num_workers` (or the driver itself, in Ray
    Train's local mode), checkpoints into the run folder, `train.max_failures` restarts of the worker group.

    A search passes the datasets it built once for all trials, and Tune's report callback in `callbacks`.
    """
    job = loop.job
    # Train V2 workers queue one report at a time and the controller collects it only when it polls (every 2 s
    # by default): with short epochs every `report` waited for the poll. Ray passes this on to its controller.
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", REPORT_POLL_S)
    resources = {"CPU": job.scaling.cpus_per_worker, **({"GPU": 1} if use_gpu else {})}
    storage_path, filesystem = run.ray_storage
    streamed = [name for name in data.datasets if name not in data.kept]
    return TorchTrainer(
        train_loop,
        train_loop_config={"loop": loop},
        torch_config=TorchConfig(backend=collectives.backend_for(use_gpu)),
        scaling_config=ray.train.ScalingConfig(num_workers=0 if loop.in_process else job.scaling.num_workers,
                                               use_gpu=use_gpu, resources_per_worker=resources,
                                               placement_strategy=job.scaling.placement.upper()),
        run_config=ray.train.RunConfig(
            name=run.run_id,
            storage_path=storage_path,
            storage_filesystem=filesystem,
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=job.train.keep_checkpoints, checkpoint_score_attribute=job.train.monitor,
                checkpoint_score_order=job.train.monitor_mode),  # the best K by the monitor, and always the last
            failure_config=ray.train.FailureConfig(max_failures=job.train.max_failures),
            callbacks=list(callbacks),
        ),
        datasets=data.datasets,
        dataset_config=_Ingest(datasets_to_split=streamed,
                               execution_options=_ingest_options(job.scaling.num_workers)),
    )


def _ingest_options(workers: int) -> ray.data.ExecutionOptions:
    options = ray.train.DataConfig.default_ingest_options()
    options.preserve_order = True  # blocks arrive in the same order every run: same seed, same metrics
    options.resource_limits = stream_limits(workers)  # memory flat in the dataset's size, a budget per worker
    return options


def data_facts(job: JobSpec, manifest: Manifest, cached: bool) -> DataFacts:
    """What a run records of its data: shards, shape, classes, rows, and the normalization the model saw."""
    mean, std = normalization(job.data.normalize, manifest)
    return DataFacts(shards=manifest.location, cached=cached, image_shape=list(manifest.image_shape),
                     tasks={task: len(classes) for task, classes in manifest.tasks.items()}, classes=manifest.tasks,
                     rows={split: manifest.num_rows(split) for split in manifest.files},
                     skipped=len(manifest.skipped), mean=list(mean), std=list(std))


def submit(job: JobSpec, *, address: str | None = None, on_progress: ProgressCallback | None = None,
           previous: Reopened | None = None) -> RunResult:
    """Run `job` to the end on Ray Train and return its summary (or continue the run `previous`, see
    `train.resume.reopen`).

    Connects to `address` (or `RAY_ADDRESS`), else starts a local Ray instance sized to this machine and stops it
    afterwards. Raises `JobError` for bad input and `TrainingFailed` when training itself fails.
    """
    submitted = time.time()
    notify = on_progress or (lambda *args: None)
    with launch(job, address, lambda phase: notify(phase, None, [])) as launched:
        manifest = launched.manifest
        if previous is None:
            run = RunDir.create(job.output.dir, job.name, job.to_yaml())
            summary = TrainSummary(job=job.name, run_id=run.run_id, run_dir=run.location, started=utc_now(),
                                   monitor=job.train.monitor, mode=job.train.monitor_mode, arch=job.model.arch,
                                   epochs=job.train.epochs)
        else:
            run, summary = previous.run, previous.summary
        launched.session.attach(run.logs_dir)
        if manifest.skipped:  # images and rows left out of the data, with the reason
            run.write_skipped(skipped_csv(manifest))
        in_process = runs_in_process(job, launched)
        summary.use_gpu, summary.in_process = launched.use_gpu, in_process
        summary.data = data_facts(job, manifest, launched.cached)
        summary.driver = f"{socket.gethostname()}:{os.getpid()}"
        summary.ray = launched.session.where
        rows = list(previous.rows) if previous else []  # every epoch so far, as metrics.csv holds them
        snapshot = Snapshot()

        tracking = Tracking.start(job, run, summary, launched.session.where, getattr(on_progress, "warn", None))

        def finish(final: TrainSummary) -> None:
            final.restarts = [*final.restarts, *[Restart(at=_iso(r["at"]), from_epoch=r["from_epoch"],
                                                         reason=r["reason"]) for r in snapshot.restarts]]
            summarize_epochs(final, rows)
            final.timing = _timing(rows)
            if rows:
                run.write_metrics(rows)
                if tracking is not None:
                    tracking.epochs(rows)
                draw(run.location, final, rows, job)

        with run_lifecycle(run, summary, resume=f"cnnjobs submit --resume {run.location}", finish=finish,
                           tracking=tracking):
            notify("starting the training loop" if in_process else "starting workers", None, rows)
            tracker = ProgressTracker.remote(resuming=previous is not None, rows=rows)  # sent as they are now
            stop = threading.Event() if in_process else None
            data = training_data(job, manifest)
            loop = LoopConfig(job, manifest, tracker, data.kept, run.location, in_process, previous is not None, stop,
                              recorded=previous.recorded if previous else [])
            trainer = build_trainer(loop, data, run, launched.use_gpu)
            snapshot = _fit_with_progress(trainer, tracker, run, rows, notify, stop, tracking)
            if snapshot.fatal:
                raise RuntimeError(snapshot.fatal)
            summary.to_first_step_s = round(snapshot.first_step_at - submitted, 1) if snapshot.first_step_at else None
            summary.workers = [snapshot.workers[rank] for rank in sorted(snapshot.workers)]
            summary.first_step_at = snapshot.first_step_at
            keep_best_model(run.location, run)
            summary.best_model = layout.BEST_MODEL
    return RunResult(run.location, summary)


def _fit_with_progress(trainer: TorchTrainer, tracker: Any, run: RunDir, rows: list[dict[str, Any]],
                       notify: ProgressCallback, stop: threading.Event | None,
                       tracking: Tracking | None = None) -> Snapshot:
    """Run `trainer.fit()` in a thread while polling the progress actor; epochs land in metrics.csv as they end.
    On Ctrl-C, or when the run folder's storage stops answering, a loop running in this process finishes its step
    and the error is raised here."""
    outcome: dict[str, Any] = {}

    def fit() -> None:
        try:
            outcome["result"] = trainer.fit()
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread below
            outcome["error"] = exc

    thread = threading.Thread(target=fit, name="cnnjobs-fit", daemon=True)
    thread.start()
    try:
        with _ctrl_c_recorded() as pressed:
            while True:
                thread.join(timeout=0.25)
                ended = not thread.is_alive()  # read before polling: the last poll comes after fit() returned
                if pressed.is_set() and not ended:
                    raise KeyboardInterrupt
                snapshot = _record(tracker, run, rows, tracking=tracking)
                notify("training", snapshot, rows)
                if ended:
                    break
    except BaseException as exc:
        if stop is not None:  # the loop runs in this process: let it leave its step cleanly
            stop.set()
            thread.join()
        if isinstance(exc, KeyboardInterrupt):
            with contextlib.suppress(Exception):  # record the epochs that ended since the last poll
                _record(tracker, run, rows, timeout=10, tracking=tracking)
        raise
    if isinstance(outcome.get("error"), StopRequested):
        raise KeyboardInterrupt
    if "error" in outcome and not snapshot.fatal:
        raise outcome["error"]
    return snapshot


def _record(tracker: Any, run: RunDir, rows: list[dict[str, Any]], timeout: float | None = None,
            tracking: Tracking | None = None) -> Snapshot:
    """Poll the progress actor and write metrics.csv when its epochs changed since the last poll (and hand them
    to the tracking server, when the run is tracked)."""
    snapshot = ray.get(tracker.poll.remote(), timeout=timeout)
    if snapshot.epochs != rows:
        rows[:] = snapshot.epochs
        run.write_metrics(rows)
        if tracking is not None:
            tracking.epochs(rows)
    return snapshot


@contextmanager
def _ctrl_c_recorded() -> Iterator[threading.Event]:
    """While training: Ctrl-C only sets the returned event, which the polling loop turns into a KeyboardInterrupt.

    With Python's default handler the KeyboardInterrupt is raised wherever the main thread happens to be, inside
    Ray's blocking calls too, where it is not ours to handle (once, on the two-node test cluster, a Ctrl-C went
    unnoticed and the run went on to the end); a handler that only records the press leaves nothing to catch. The
    default handler is back as soon as the loop is left, so a second Ctrl-C while the loop winds down interrupts.
    """
    pressed = threading.Event()
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield pressed
        return
    previous = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, lambda signum, frame: pressed.set())
    try:
        yield pressed
    finally:
        signal.signal(signal.SIGINT, previous)


def keep_best_model(run_location: str, run: RunDir) -> None:
    """Save the best weights of the newest checkpoint in `run_location` as `<run>/best_model.pt`."""
    loaded, passed = checkpoints.newest_loadable(checkpoints.in_run(run_location))
    if loaded is None:
        raise RuntimeError("training left no readable checkpoint" + (f" ({'; '.join(passed)})" if passed else ""))
    buffer = io.BytesIO()
    torch.save(loaded.best if loaded.best is not None else loaded.weights, buffer)
    run.write_best_model(buffer.getvalue())


def _timing(rows: list[dict[str, Any]]) -> Timing | None:
    """The run's seconds waiting, computing and synchronizing (summed over epochs), and the doctor's verdict."""
    totals = {part: sum(float(row.get(f"time/{part}_s") or 0.0) for row in rows) for part in PARTS}
    if not any(totals.values()):
        return None
    return Timing(wait_s=round(totals["wait"], 3), compute_s=round(totals["compute"], 3),
                  sync_s=round(totals["sync"], 3), verdict=verdict(totals["wait"], totals["compute"], totals["sync"]))


def _iso(wall: float) -> str:
    return datetime.fromtimestamp(wall, timezone.utc).isoformat(timespec="seconds")
