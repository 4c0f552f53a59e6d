"""Running a search: the job's `tune:` section as Ray Tune trials, early-stopped by ASHA, resumable.

Each trial is a small Tune function that fills the sampled values into the job, validates it like any job, and
fits the same TorchTrainer `cnnjobs submit` builds (`runner.build_trainer`); a `TuneReportCallback` turns each
epoch's `ray.train.report` into a Tune result, on which ASHA decides. The shards are prepared and the datasets
built once, on the driver, and shared by all trials.

Run folder `<output.dir>/<job name>/<run id>/`:
    job.yaml, summary.json (kind: tune), tune_results.csv (one row per trial, best first), best_job.yaml,
    best_model.pt, tune/ (Tune's experiment state, for --resume), trials/<trial id>/ (each trial's Train run)
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import ray
import ray.train
from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback
from ray.tune.schedulers import ASHAScheduler

from cnnjobs import storage
from cnnjobs.data.pipeline import TrainingData
from cnnjobs.data.shards import Manifest
from cnnjobs.errors import JobError
from cnnjobs.results.tensorboard import write_epochs
from cnnjobs.results.tracking import Tracking
from cnnjobs.run import layout
from cnnjobs.run.find import find_run
from cnnjobs.run.folder import RunDir, utc_now
from cnnjobs.run.lifecycle import run_lifecycle
from cnnjobs.run.summary import BestTrial, DataFacts, TuneSummary
from cnnjobs.spec import JobSpec, apply_values, validate_job
from cnnjobs.train.launch import launch
from cnnjobs.train.loop import LoopConfig
from cnnjobs.train.runner import build_trainer, keep_best_model, training_data
from cnnjobs.tune.budget import Concurrency, plan_concurrency
from cnnjobs.tune.space import num_trials, sampler, search_space
from cnnjobs.tune.trials import Tracker, TrialRow, TrialsCallback, results_csv, rows_from_grid

DRIVER_CPUS = 0.01  # the trial function only waits on its TorchTrainer; 0 is rejected by Tune

log = logging.getLogger("cnnjobs")


@dataclass(frozen=True)
class TuneResult:
    """What `search` returns: the run folder, its summary and the ranked trials."""

    run_dir: str
    summary: TuneSummary
    rows: list[TrialRow]


def _trial(config: dict[str, Any], *, raw: dict, manifest: Manifest, data: TrainingData, run_location: str,
           use_gpu: bool) -> None:
    """One Tune trial: the job with the sampled values, trained by the same TorchTrainer as `submit`."""
    job = validate_job(apply_values(raw, config), "tune trial")
    trial_id = tune.get_context().get_trial_id()
    # Its own Train run folder: fitting again after --resume continues from that run's last checkpoint.
    run = RunDir(storage.join(run_location, layout.TRIALS, trial_id), job.name, trial_id)
    loop = LoopConfig(job, manifest, None, data.kept, run.location)
    build_trainer(loop, data, run, use_gpu, callbacks=[TuneReportCallback()]).fit()


def search(job: JobSpec | None, *, address: str | None = None, on_progress: TrialsCallback | None = None,
           resume: str | None = None, root: str = "runs") -> TuneResult:
    """Run the search in `job.tune`, or continue the interrupted one in run folder `resume` (or a run id under
    `root`, or under the job's `output.dir` when a job is given) with the job it was started with.

    Raises `JobError` for bad input and `TrainingFailed` when the search itself fails.
    """
    previous = None
    if resume is not None:
        found, job, previous = _reopen(resume, job, root)
    elif job is None or job.tune is None:
        raise JobError(f"{job.source if job else 'tune'}: no `tune:` section to search (see jobs/arch_search.yaml)")
    notify = on_progress or (lambda *args: None)
    with launch(job, address, lambda phase: notify(phase, [])) as launched:
        manifest = launched.manifest
        if previous is None:
            run = RunDir.create(job.output.dir, job.name, job.to_yaml())
        else:
            run = RunDir(found.path, job.name, previous.run_id)
        launched.session.attach(run.logs_dir)
        metric, mode = job.tune_metric
        summary = previous or TuneSummary(
            job=job.name, run_id=run.run_id, run_dir=run.location, started=utc_now(), monitor=metric, mode=mode,
            epochs=job.train.epochs, scheduler=job.tune.scheduler, trials=num_trials(job.tune),
            space={key: dimension.model_dump(exclude_none=True) for key, dimension in job.tune.space.items()})
        summary.data = DataFacts(shards=manifest.location, cached=launched.cached)
        rows: list[TrialRow] = []

        def finish(final: TuneSummary) -> None:
            if rows:
                final.epochs_run = sum(row.epochs for row in rows)
                final.trials_stopped_early = sum(row.status == "stopped" for row in rows)

        resume_command = f"cnnjobs tune --resume {run.location}"
        tracking = Tracking.start(job, run, summary, launched.session.where, getattr(on_progress, "warn", None))
        with run_lifecycle(run, summary, resume=resume_command, finish=finish, tracking=tracking):
            plan = plan_concurrency(job, ray.cluster_resources(), launched.use_gpu)
            summary.use_gpu, summary.concurrency, summary.concurrency_reason = launched.use_gpu, plan.trials, \
                plan.reason
            run.write_summary(summary)
            notify(f"{plan.trials} trial(s) at a time: {plan.reason}", [])
            tracker = Tracker(job, run, notify, tracking)
            tuner = _tuner(job, manifest, run, plan, tracker, launched.use_gpu, restore=previous is not None)
            started = time.time()
            with _tune_console_off():
                grid = tuner.fit()
            out_of_time = job.tune.time_budget_s and time.time() - started >= job.tune.time_budget_s
            unfinished = any(status not in ("TERMINATED", "ERROR") for status in tracker.statuses.values())
            interrupted = unfinished and not out_of_time
            rows[:] = rows_from_grid(grid, job, tracker.ranked(), run.location)
            for result in grid:  # `tensorboard --logdir <run>/trials` shows every trial
                if result.metrics_dataframe is not None and result.metrics:
                    write_epochs(storage.join(run.location, layout.TRIALS, result.metrics["trial_id"],
                                              layout.TENSORBOARD), result.metrics_dataframe.to_dict("records"))
            summary.most_running = max(tracker.most_running, summary.most_running)
            for row in rows:  # a trial cut short by the interruption is not finished, whatever Tune recorded
                status = tracker.statuses.get(row.trial) if interrupted else None
                if status in ("RUNNING", "PENDING", "PAUSED"):
                    row.status = status.lower()
            # What a killed driver had not sent yet: each trial's epochs, once each, and the ends of the trials
            # that finished (after the statuses above: a trial the interruption cut short has not ended).
            if tracking is not None:
                for row in rows:
                    for epoch in row.history:
                        tracking.trial(row.trial).result(row.values, epoch)
                    if row.status in ("done", "stopped", "error"):
                        tracking.trial(row.trial).ended(row.values, row.status)
            run.write_trials(results_csv(rows, list(job.tune.space)))
            unfinished_rows = [row.trial for row in rows if row.status in ("pending", "running")]
            if interrupted:  # Tune caught the Ctrl-C itself and returned
                summary.status = "interrupted"
            elif unfinished_rows:  # never called a success: a trial neither finished nor was stopped
                raise RuntimeError(f"{len(unfinished_rows)} trial(s) did not finish ({', '.join(unfinished_rows)}); "
                                   f"continue with {resume_command}")
            elif grid.errors and all(row.best is None for row in rows):
                raise RuntimeError(f"every trial failed; the first: {str(grid.errors[0]).strip().splitlines()[0]}")
            else:
                _keep_best(job, rows, run, summary)
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


def _reopen(ref: str, job: JobSpec | None, root: str) -> tuple[Any, JobSpec, TuneSummary]:
    """The run folder of an interrupted search, the job it was started with, and its summary so far."""
    found = find_run(ref, job.output.dir if job is not None else root)
    if not isinstance(found.summary, TuneSummary):
        raise JobError(f"{ref}: not a search ({found.problem or f'kind {found.summary.kind}'})")
    if found.summary.status == "succeeded":
        raise JobError(f"{ref}: the search finished already; nothing to resume")
    if not found.has(layout.TUNE_EXPERIMENT):
        raise JobError(f"{ref}: no Tune state in {found.file(layout.TUNE_EXPERIMENT)}; cannot resume")
    saved = found.job()
    if job is not None and saved.tune != job.tune:
        log.warning("resuming with the tune: section saved in %s, not the one in the job file", found.path)
    return found, saved, found.summary


def _tuner(job: JobSpec, manifest: Manifest, run: RunDir, plan: Concurrency, tracker: Tracker, use_gpu: bool,
           restore: bool) -> tune.Tuner:
    """A new Tuner for `job`, or the interrupted one restored from the run folder."""
    # Built and (when small) materialized once here: every trial reads the same blocks from the object store.
    data = training_data(job, manifest)
    trainable = tune.with_resources(
        tune.with_parameters(_trial, raw=job.model_dump(mode="json"), manifest=manifest, data=data,
                             run_location=run.location, use_gpu=use_gpu),
        {"CPU": DRIVER_CPUS})
    root, filesystem = storage.for_ray(run.location)  # Tune's experiment folder is `<run>/tune`
    if restore:
        experiment = storage.for_ray(run.path(layout.TUNE_EXPERIMENT))[0]
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
        run_config=tune.RunConfig(name=layout.TUNE_EXPERIMENT, storage_path=root, storage_filesystem=filesystem,
                                  callbacks=[tracker], verbose=0),
    )


def _keep_best(job: JobSpec, rows: list[TrialRow], run: RunDir, summary: TuneSummary) -> None:
    """The winner: its values in the summary, its weights as best_model.pt, its job as best_job.yaml."""
    best = next((row for row in rows if row.best is not None), None)
    if best is None:
        raise RuntimeError("no trial reported a result")
    winner = validate_job(apply_values(job.model_dump(mode="json"), best.values), run.path(layout.BEST_JOB))
    run.write_best_job(winner.to_yaml())
    if best.checkpoint:  # the trial's run folder: its newest checkpoint holds the trial's best weights
        keep_best_model(storage.join(run.location, layout.TRIALS, best.trial), run)
    summary.arch, summary.best_metric, summary.best_job = winner.model.arch, best.best, layout.BEST_JOB
    summary.best_model = layout.BEST_MODEL if best.checkpoint else None
    summary.best_trial = BestTrial(trial=best.trial, values=best.values, epochs=best.epochs,
                                   best_epoch=best.best_epoch, test_acc=best.test_acc)
