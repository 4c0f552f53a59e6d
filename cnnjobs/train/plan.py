"""`cnnjobs plan JOB.yaml`: a dry run that says what a job will cost before the GPUs start.

It validates the job, lists (and if needed writes) its data, joins or starts Ray exactly as `submit` would, and runs
the job's own training loop on the target for a few steps (`probe_steps`) and validation batches: the same model,
data pipeline, workers and devices. From that it predicts the seconds per epoch and the whole job's time, with the
peak memory and the share of step time spent waiting for data. For a search it also gives the epochs ASHA is
expected to run and the wall time at the search's concurrency. Nothing is written to `output.dir`.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import psutil
import ray

from cnnjobs.run.folder import RunDir
from cnnjobs.spec import JobSpec
from cnnjobs.train.cache import train_steps
from cnnjobs.train.launch import launch
from cnnjobs.train.loop import LoopConfig
from cnnjobs.train.progress import ProgressTracker
from cnnjobs.train.runner import build_trainer, runs_in_process, training_data
from cnnjobs.train.timing import verdict

PROBE_STEPS = 40
TRIAL_START_S = 20.0  # a search's trial starts its own TorchTrainer worker (measured: 15-25 s on 2 cores)


@dataclass
class SearchPlan:
    """What a `tune:` section will cost: trials, epochs under ASHA (or all of them), wall time at its concurrency."""

    trials: int
    concurrency: int
    expected_epochs: float
    all_epochs: int
    wall_s: float


@dataclass
class Plan:
    """The predicted cost of a job, from a probe on its target."""

    job: str
    target: str
    in_process: bool
    use_gpu: bool
    rows: dict[str, int]
    steps_per_epoch: int
    step_s: float
    val_s: float  # one validation pass
    epoch_s: float
    start_s: float  # from the command's start to the first training step
    end_s: float  # after the last epoch: the summary, and stopping Ray when the command started it
    epochs: int
    eta_s: float  # start + every epoch + end (an upper bound with early stopping)
    wait_share: float
    verdict: str
    peak_rss_mb: float
    gpu_mb: float | None
    search: SearchPlan | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def plan(job: JobSpec, *, address: str | None = None, steps: int = PROBE_STEPS,
         notify: Callable[[str], None] = lambda phase: None) -> Plan:
    """Probe `job` on its target and predict what running it costs (times counted from this process's start, as
    `cnnjobs submit` would count them)."""
    started = psutil.Process().create_time()
    with launch(job, address, notify) as launched, tempfile.TemporaryDirectory(prefix="cnnjobs-plan-") as folder:
        manifest = launched.manifest
        in_process = runs_in_process(job, launched) and job.tune is None
        notify("probing the training loop")
        tracker = ProgressTracker.remote()
        data = training_data(job, manifest)
        run = RunDir(folder, job.name, "plan")
        loop = LoopConfig(job, manifest, tracker, data.kept, folder, in_process, probe_steps=steps)
        build_trainer(loop, data, run, launched.use_gpu).fit()
        snapshot = ray.get(tracker.poll.remote())
        resources = ray.cluster_resources()
        size = f"{resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs, {len(ray.nodes())} node(s)"
        target = f"{launched.session.where} ({size}), " + \
            ("the loop in this process" if in_process else f"{job.scaling.num_workers} worker process(es)")
        probed = time.time()
    end_s = time.time() - probed
    probe = snapshot.probe
    if probe is None:
        raise RuntimeError("the probe reported nothing")
    world = job.scaling.num_workers
    train_rows = manifest.num_rows("train")
    steps_per_epoch = train_steps(train_rows // world, job.train.batch_size // world)  # as the loop counts them
    val_rows = manifest.num_rows("val")
    val_s = probe["val_s"] / max(probe["val_images"], 1) * val_rows / world if probe["val_images"] else 0.0
    epoch_s = steps_per_epoch * probe["step_s"] + val_s / job.train.validate_every
    start_s = snapshot.first_step_at - started if snapshot.first_step_at else 0.0
    wait, compute, sync = probe["wait_s"], probe["compute_s"], probe["sync_s"]
    total = wait + compute + sync
    result = Plan(
        job=job.name, target=target, in_process=in_process, use_gpu=launched.use_gpu,
        rows={split: manifest.num_rows(split) for split in manifest.files}, steps_per_epoch=steps_per_epoch,
        step_s=round(probe["step_s"], 5), val_s=round(val_s, 3), epoch_s=round(epoch_s, 3),
        start_s=round(start_s, 1), end_s=round(end_s, 1), epochs=job.train.epochs,
        eta_s=round(start_s + job.train.epochs * epoch_s + end_s, 1),
        wait_share=round(wait / total, 3) if total else 0.0, verdict=verdict(wait, compute, sync),
        peak_rss_mb=round(probe["peak_rss_bytes"] / 2**20, 1),
        gpu_mb=round(probe["gpu_bytes"] / 2**20, 1) if probe.get("gpu_bytes") else None)
    if job.tune is not None:
        result.search = _search_plan(job, epoch_s, resources, launched.use_gpu)
    return result


def expected_epochs(trials: int, epochs: int, grace: int, factor: float) -> float:
    """Epochs ASHA is expected to run: every trial reaches the first rung (`grace` epochs), about 1/factor of them
    each next rung (grace x factor^k), and the survivors of the last rung run to `epochs`."""
    total, reached, rung, survivors = 0.0, 0, grace, float(trials)
    while reached < epochs:
        stop = min(rung, epochs)
        total += survivors * (stop - reached)
        reached, rung, survivors = stop, rung * factor, survivors / factor
    return total


def _search_plan(job: JobSpec, epoch_s: float, resources: dict[str, float], use_gpu: bool) -> SearchPlan:
    from cnnjobs.tune.budget import plan_concurrency
    from cnnjobs.tune.space import num_trials

    trials = num_trials(job.tune)
    concurrency = plan_concurrency(job, resources, use_gpu).trials
    epochs = expected_epochs(trials, job.train.epochs, job.tune.grace_period, job.tune.reduction_factor) \
        if job.tune.scheduler == "asha" else float(trials * job.train.epochs)
    wall = (epochs * epoch_s + trials * TRIAL_START_S) / max(concurrency, 1)
    return SearchPlan(trials, concurrency, round(epochs, 1), trials * job.train.epochs, round(wall, 1))


__all__ = ["PROBE_STEPS", "Plan", "SearchPlan", "expected_epochs", "plan"]
