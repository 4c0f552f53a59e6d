"""Architecture and hyperparameter search: the job's `tune:` section run as Ray Tune trials, early-stopped by ASHA.

Each trial is a small Tune function that fills the sampled values into the job, validates it like any job, and
fits the same TorchTrainer `cnnjobs submit` builds (`runner.build_trainer`); a `TuneReportCallback` turns each
epoch's `ray.train.report` into a Tune result, on which ASHA decides. The shards are prepared and the datasets
built once, on the driver, and shared by all trials.

Run folder `<output.dir>/<job name>/<run id>/`:
    job.yaml, summary.json (kind: tune), tune_results.csv (one row per trial, best first), best_job.yaml,
    best_model.pt, tune/ (Tune's experiment state, for --resume), trials/<trial id>/ (each trial's Train run)
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import ray
import ray.train
import yaml
from ray import tune
from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY, TuneReportCallback
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.basic_variant import BasicVariantGenerator

from cnnjobs import storage
from cnnjobs.data.shards import Manifest, prepare
from cnnjobs.errors import JobError, TrainingFailed
from cnnjobs.results.rundir import JOB, RunDir, utc_now
from cnnjobs.results.runs import TUNE_RESULTS, find_run
from cnnjobs.spec import Dimension, JobSpec, TuneSpec, apply_values, validate_job
from cnnjobs.train.runner import build_trainer, check_monitor, keep_best_model, resolve_use_gpu, training_datasets
from cnnjobs.train.session import ray_session

BEST_JOB = "best_job.yaml"
EXPERIMENT = "tune"  # Tune's experiment folder inside the run folder
DATA_CPUS = 1.0  # kept free per running trial for Ray Data's read/decode tasks (RAY_NOTES: the CPU deadlock)
DRIVER_CPUS = 0.01  # the trial function only waits on its TorchTrainer; 0 is rejected by Tune

log = logging.getLogger("cnnjobs")
TrialsCallback = Callable[[str, list["TrialRow"]], None]


# ------------------------------------------------------------------------------------------ the space


def search_space(spec: TuneSpec) -> dict[str, Any]:
    """The `tune.space` of a job as Ray Tune sampling objects, keyed by dotted job key."""
    return {key: _domain(dimension) for key, dimension in spec.space.items()}


def _domain(dimension: Dimension) -> Any:
    if dimension.choice is not None:
        return tune.choice(dimension.choice)
    if dimension.grid is not None:
        return tune.grid_search(dimension.grid)
    if dimension.uniform is not None:
        return tune.uniform(*dimension.uniform)
    if dimension.loguniform is not None:
        return tune.loguniform(*dimension.loguniform)
    return tune.randint(*dimension.randint)


def sampler(job: JobSpec, max_concurrent: int = 0) -> BasicVariantGenerator:
    """Tune's grid/random sampler, seeded by `tune.seed` (else `train.seed`): a job samples the same trials.

    It also holds the concurrency limit: Tune ignores `TuneConfig.max_concurrent_trials` when it is given a
    sampler of this kind (0 = no limit).
    """
    seed = job.tune.seed if job.tune.seed is not None else job.train.seed
    return BasicVariantGenerator(max_concurrent=max_concurrent, random_state=seed)


def num_trials(spec: TuneSpec) -> int:
    """Trials the search runs: `num_samples` times every combination of the `grid` values."""
    return spec.num_samples * math.prod(len(d.grid) for d in spec.space.values() if d.grid is not None)


# ---------------------------------------------------------------------------------------- the budget


@dataclass(frozen=True)
class Concurrency:
    """How many trials run at once, and why (shown to the user)."""

    trials: int
    reason: str


def plan_concurrency(job: JobSpec, resources: dict[str, float], use_gpu: bool) -> Concurrency:
    """Trials at once so that every running trial leaves `DATA_CPUS` free for Ray Data (never a deadlock).

    One trial takes `scaling.num_workers x cpus_per_worker` CPUs (and a GPU per worker with `use_gpu`) plus
    the CPU its data pipeline needs; `tune.max_concurrent_trials` can only lower the result.
    """
    workers, per_worker = job.scaling.num_workers, job.scaling.cpus_per_worker
    per_trial = workers * per_worker + DATA_CPUS
    cpus, gpus = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
    by_cpu = int(cpus // per_trial)
    if by_cpu < 1:
        raise JobError(f"scaling: one trial needs {per_trial:g} CPUs ({workers} worker(s) x {per_worker:g} + "
                       f"{DATA_CPUS:g} for data) but the cluster has {cpus:g}")
    limits = {by_cpu: f"{cpus:g} CPUs / {per_trial:g} per trial ({workers} worker(s) x {per_worker:g} CPU + "
                      f"{DATA_CPUS:g} for data)"}
    if use_gpu:
        limits.setdefault(int(gpus // workers), f"{gpus:g} GPUs / {workers} per trial")
    total = num_trials(job.tune)
    limits.setdefault(total, f"{total} trials in the search")
    cap = job.tune.max_concurrent_trials
    if cap is not None:
        limits.setdefault(cap, f"tune.max_concurrent_trials = {cap}")
    trials = min(limits)
    return Concurrency(trials, limits[trials])


# ---------------------------------------------------------------------------------------- one trial


def _trial(config: dict[str, Any], *, raw: dict, manifest: Manifest, datasets: dict, run_location: str) -> None:
    """One Tune trial: the job with the sampled values, trained by the same TorchTrainer as `submit`."""
    job = validate_job(apply_values(raw, config), "tune trial")
    trial_id = tune.get_context().get_trial_id()
    # Its own Train run folder: fitting again after --resume continues from that run's last checkpoint.
    run = RunDir(storage.join(run_location, "trials", trial_id), job.name, trial_id)
    trainer = build_trainer(job, manifest, run, None, datasets=datasets, callbacks=[TuneReportCallback()])
    trainer.fit()


# ---------------------------------------------------------------------------------- rows and results


@dataclass
class TrialRow:
    """One trial as the tables and `tune_results.csv` show it."""

    trial: str
    status: str  # pending, running, done, stopped (early), error
    values: dict[str, Any]
    epochs: int = 0
    last: float | None = None
    best: float | None = None
    best_epoch: int | None = None
    test_acc: float | None = None
    checkpoint: str | None = None

    def add(self, result: dict[str, Any], metric: str, mode: str) -> None:
        """Take one epoch's reported metrics."""
        self.epochs = int(result.get("epoch", self.epochs))
        self.last = result.get(metric)
        if self.last is not None and (self.best is None or (self.last < self.best if mode == "min"
                                                            else self.last > self.best)):
            self.best, self.best_epoch = self.last, self.epochs
        self.test_acc = result.get("test/acc", self.test_acc)
        self.checkpoint = result.get(CHECKPOINT_PATH_KEY, self.checkpoint)

    def record(self, rank: int, keys: list[str]) -> dict[str, Any]:
        """The row as `tune_results.csv` holds it (and `cnnjobs show` reads it back)."""
        return {"rank": rank, "trial": self.trial, "status": self.status, **{k: self.values.get(k) for k in keys},
                "epochs": self.epochs, "best": self.best, "best_epoch": self.best_epoch, "last": self.last,
                "test/acc": self.test_acc, "stopped_early": self.status == "stopped"}


def rank_rows(rows: list[TrialRow], mode: str) -> list[TrialRow]:
    """Best first by each trial's best epoch; trials without a result last; ties keep trial order."""
    sign = 1 if mode == "min" else -1
    return sorted(rows, key=lambda r: (r.best is None, sign * (r.best or 0.0)))


def records(rows: list[TrialRow], keys: list[str]) -> list[dict[str, Any]]:
    """Ranked rows as records: what the tables show and `tune_results.csv` holds."""
    return [row.record(rank, keys) for rank, row in enumerate(rows, 1)]


def results_csv(rows: list[TrialRow], keys: list[str]) -> str:
    """`tune_results.csv`: rank, trial, status, the sampled values, epochs run, best and last metric, ..."""
    out = io.StringIO()
    writer = csv.DictWriter(out, ["rank", "trial", "status", *keys, "epochs", "best", "best_epoch", "last",
                                  "test/acc", "stopped_early"])
    writer.writeheader()
    writer.writerows(records(rows, keys))
    return out.getvalue()


class _Tracker(tune.Callback):
    """Follows the trials on the driver: live rows for the table, and `tune_results.csv` as trials end."""

    def __init__(self, job: JobSpec, run: RunDir, notify: TrialsCallback) -> None:
        self.job, self.run, self.notify = job, run, notify
        self.metric, self.mode = job.tune_metric
        self.keys = list(job.tune.space)
        self.rows: dict[str, TrialRow] = {}
        self.statuses: dict[str, str] = {}  # Tune's trial statuses at the end of its last step
        self.most_running = 0  # the most trials running at once, as the summary reports it

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its run config (with this callback) into the experiment state; a restore installs a new one.
        return {**self.__dict__, "notify": None, "rows": {}}

    def row(self, trial: Any) -> TrialRow:
        if trial.trial_id not in self.rows:
            values = {k: trial.config.get(k) for k in self.keys}
            self.rows[trial.trial_id] = TrialRow(trial.trial_id, "pending", values)
        return self.rows[trial.trial_id]

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        # Kept from the last step: after an interruption Tune's cleanup marks every trial terminated.
        self.statuses = {trial.trial_id: trial.status for trial in trials}
        self.most_running = max(self.most_running, sum(trial.status == "RUNNING" for trial in trials))
        for trial in trials:
            row = self.row(trial)
            if row.status in ("pending", "running"):
                row.status = {"RUNNING": "running", "PENDING": "pending"}.get(trial.status, row.status)
        self.notify("tuning", self.ranked())

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self.row(trial).add(result, self.metric, self.mode)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        row = self.row(trial)
        row.status = "done" if row.epochs >= self.job.train.epochs else "stopped"
        self.save()

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.row(trial).status = "error"
        self.save()

    def ranked(self) -> list[TrialRow]:
        return rank_rows(list(self.rows.values()), self.mode)

    def save(self) -> None:
        storage.write_text(self.run.path(TUNE_RESULTS), results_csv(self.ranked(), self.keys))


def _rows_from_grid(grid: tune.ResultGrid, job: JobSpec, live: list[TrialRow]) -> list[TrialRow]:
    """Every trial of the search, from Tune's records (they include trials finished before a --resume);
    trials that never started have no record there and come from the `live` rows."""
    metric, mode = job.tune_metric
    rows = []
    for result in grid:
        if not result.config or not result.metrics:
            continue
        row = TrialRow(result.metrics.get("trial_id") or os.path.basename(result.path.rstrip("/")), "pending",
                       {k: result.config.get(k) for k in job.tune.space})
        frame = result.metrics_dataframe
        for record in (frame.to_dict("records") if frame is not None else []):
            row.add(record, metric, mode)
        if result.error is not None:
            row.status = "error"
        elif row.epochs:
            row.status = "done" if row.epochs >= job.train.epochs else "stopped"
        rows.append(row)
    seen = {row.trial for row in rows}
    return rank_rows(rows + [row for row in live if row.trial not in seen], mode)


# ------------------------------------------------------------------------------------------- running


@dataclass(frozen=True)
class TuneResult:
    """What `search` returns: the run folder, its `summary.json` content and the ranked trials."""

    run_dir: str
    summary: dict[str, Any]
    rows: list[TrialRow]


def search(job: JobSpec, *, address: str | None = None, on_progress: TrialsCallback | None = None,
           resume: str | None = None) -> TuneResult:
    """Run the search in `job.tune` (or continue the interrupted one in run folder / run id `resume`).

    Raises `JobError` for bad input and `TrainingFailed` when the search itself fails.
    """
    if resume is not None:
        run, job, summary = _reopen(resume, job)
    elif job.tune is None:
        raise JobError("the job has no `tune:` section (see jobs/arch_search.yaml)")
    else:
        run, summary = RunDir.create(job), {}
    notify = on_progress or (lambda *args: None)
    notify("preparing data", [])
    manifest, cached = prepare(job.data)
    check_monitor(job, manifest)
    metric, mode = job.tune_metric
    summary.update({
        "job": job.name, "run_id": run.run_id, "run_dir": run.location, "kind": "tune", "status": "running",
        "started": summary.get("started", utc_now()), "monitor": metric, "mode": mode, "epochs": job.train.epochs,
        "scheduler": job.tune.scheduler, "trials": num_trials(job.tune),
        "space": {key: dimension.model_dump(exclude_none=True) for key, dimension in job.tune.space.items()},
        "data": {"shards": manifest.location, "cached": cached},
    })
    for stale in ("resume", "error"):  # from an interrupted session
        summary.pop(stale, None)
    run.write_summary(summary)
    rows: list[TrialRow] = []
    try:
        with ray_session(run.logs_dir, address=address, workers=job.scaling.num_workers,
                         cpus_per_worker=job.scaling.cpus_per_worker):
            use_gpu = resolve_use_gpu(job)
            plan = plan_concurrency(job, ray.cluster_resources(), use_gpu)
            summary.update(use_gpu=use_gpu, concurrency=plan.trials, concurrency_reason=plan.reason)
            run.write_summary(summary)
            notify(f"{plan.trials} trial(s) at a time: {plan.reason}", [])
            tracker = _Tracker(job, run, notify)
            tuner = _tuner(job, manifest, run, plan, tracker, resume is not None)
            started = time.time()
            with _tune_console_off():
                grid = tuner.fit()
            out_of_time = job.tune.time_budget_s and time.time() - started >= job.tune.time_budget_s
            unfinished = any(status not in ("TERMINATED", "ERROR") for status in tracker.statuses.values())
            interrupted = unfinished and not out_of_time
            rows = _rows_from_grid(grid, job, tracker.ranked())
            summary["most_running"] = max(tracker.most_running, summary.get("most_running", 0))
            for row in rows:  # a trial cut short by the interruption is not finished, whatever Tune recorded
                status = tracker.statuses.get(row.trial) if interrupted else None
                if status in ("RUNNING", "PENDING", "PAUSED"):
                    row.status = status.lower()
            storage.write_text(run.path(TUNE_RESULTS), results_csv(rows, list(job.tune.space)))
            if interrupted:
                summary.update(status="interrupted", resume=f"cnnjobs tune {run.location}/{JOB} --resume "
                                                            f"{run.location}")
            elif grid.errors and all(row.best is None for row in rows):
                raise RuntimeError(f"every trial failed; the first: {_first_line(grid.errors[0])}")
            else:
                _keep_best(job, rows, run, summary)
    except JobError:
        raise
    except BaseException as exc:  # the search broke (or a second Ctrl-C): the run folder says so
        log.error("search failed:\n%s", traceback.format_exc())
        interrupted = isinstance(exc, KeyboardInterrupt)
        summary.update(status="interrupted" if interrupted else "failed", error=_first_line(exc))
        _finish(run, summary, rows)
        if interrupted:
            raise
        raise TrainingFailed(f"search failed: {_first_line(exc)}", run.location) from exc
    _finish(run, summary, rows)
    return TuneResult(run.location, summary, rows)


@contextmanager
def _tune_console_off() -> Iterator[None]:
    """Tune's own console tables would fight with ours; its older reporter is silent at `verbose=0`."""
    saved = os.environ.get("RAY_AIR_NEW_OUTPUT")
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("RAY_AIR_NEW_OUTPUT")
        else:
            os.environ["RAY_AIR_NEW_OUTPUT"] = saved


def _reopen(ref: str, job: JobSpec) -> tuple[RunDir, JobSpec, dict[str, Any]]:
    """The run folder of an interrupted search, with the job it was started with."""
    found = find_run(ref, job.output.dir)
    if found.summary.get("kind") != "tune":
        raise JobError(f"{ref}: not a tune run (kind {found.summary.get('kind')!r})")
    if found.summary.get("status") == "succeeded":
        raise JobError(f"{ref}: the search finished already; nothing to resume")
    if not storage.exists(storage.join(found.path, EXPERIMENT)):
        raise JobError(f"{ref}: no Tune state in {storage.join(found.path, EXPERIMENT)}; cannot resume")
    saved = validate_job(yaml.safe_load(storage.read_text(storage.join(found.path, JOB))),
                         storage.join(found.path, JOB))
    if saved.tune != job.tune:
        log.warning("resuming with the tune: section saved in %s, not the one in the job file", found.path)
    # Durations add up over the sessions of one search.
    run = RunDir(found.path, saved.name, found.summary["run_id"], time.time() - found.summary.get("duration_s", 0))
    return run, saved, dict(found.summary)


def _tuner(job: JobSpec, manifest: Manifest, run: RunDir, plan: Concurrency, tracker: _Tracker,
           restore: bool) -> tune.Tuner:
    """A new Tuner for `job`, or the interrupted one restored from the run folder."""
    # Built and (when small) materialized once here: every trial reads the same blocks from the object store.
    datasets = training_datasets(job, manifest)
    fs, root = storage.resolve(run.location)
    trainable = tune.with_resources(
        tune.with_parameters(_trial, raw=job.model_dump(mode="json"), manifest=manifest, datasets=datasets,
                             run_location=run.location if storage.is_uri(run.location) else root),
        {"CPU": DRIVER_CPUS})
    filesystem = fs if storage.is_uri(run.location) else None
    if restore:
        experiment = storage.join(run.location, EXPERIMENT) if filesystem else storage.join(root, EXPERIMENT)
        tuner = tune.Tuner.restore(experiment, trainable, resume_unfinished=True, storage_filesystem=filesystem)
        tuner._local_tuner._run_config.callbacks = [tracker]  # callbacks are not part of the saved state
        return tuner
    metric, mode = job.tune_metric
    scheduler = None
    if job.tune.scheduler == "asha":
        # time_attr is our epoch count, not Tune's iteration: a resumed trial continues at its epoch.
        scheduler = ASHAScheduler(time_attr="epoch", max_t=job.train.epochs,
                                  grace_period=min(job.tune.grace_period, job.train.epochs),
                                  reduction_factor=job.tune.reduction_factor)
    return tune.Tuner(
        trainable,
        param_space=search_space(job.tune),
        tune_config=tune.TuneConfig(metric=metric, mode=mode, scheduler=scheduler, num_samples=job.tune.num_samples,
                                    search_alg=sampler(job, plan.trials), time_budget_s=job.tune.time_budget_s),
        run_config=tune.RunConfig(name=EXPERIMENT, storage_path=run.location if filesystem else root,
                                  storage_filesystem=filesystem, callbacks=[tracker], verbose=0),
    )


def _keep_best(job: JobSpec, rows: list[TrialRow], run: RunDir, summary: dict[str, Any]) -> None:
    """The winner: its values in the summary, its weights as best_model.pt, its job as best_job.yaml."""
    best = next((row for row in rows if row.best is not None), None)
    if best is None:
        raise RuntimeError("no trial reported a result")
    winner = validate_job(apply_values(job.model_dump(mode="json"), best.values), run.path(BEST_JOB))
    storage.write_text(run.path(BEST_JOB), winner.to_yaml())
    if best.checkpoint:
        fs, path = storage.resolve(best.checkpoint) if storage.is_uri(best.checkpoint) else (None, best.checkpoint)
        keep_best_model(ray.train.Checkpoint(path, filesystem=fs), run)
    summary.update(status="succeeded", arch=winner.model.arch, best_metric=best.best, best_job=BEST_JOB,
                   best_model="best_model.pt" if best.checkpoint else None,
                   best_trial={"trial": best.trial, "values": best.values, "epochs": best.epochs,
                               "best_epoch": best.best_epoch, "test_acc": best.test_acc})


def _finish(run: RunDir, summary: dict[str, Any], rows: list[TrialRow]) -> None:
    summary["finished"] = utc_now()
    summary["duration_s"] = round(time.time() - run.started, 1)
    if rows:
        summary["epochs_run"] = sum(row.epochs for row in rows)
        summary["stopped_early"] = sum(row.status == "stopped" for row in rows)
    run.write_summary(summary)
    run.upload_logs()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or exc.__class__.__name__
    return text.splitlines()[0][:300]
