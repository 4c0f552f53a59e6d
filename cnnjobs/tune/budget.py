"""How many trials run at once: every running trial leaves a CPU free for its data pipeline, never a deadlock."""

from __future__ import annotations

from dataclasses import dataclass

from cnnjobs.checks import DATA_CPUS
from cnnjobs.errors import JobError
from cnnjobs.spec import JobSpec
from cnnjobs.tune.space import num_trials


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
        raise JobError(f"{job.source}: scaling: one trial needs {per_trial:g} CPUs ({workers} worker(s) x "
                       f"{per_worker:g} + {DATA_CPUS:g} for data) but the cluster has {cpus:g}")
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
