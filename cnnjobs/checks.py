"""The checks that need more than the YAML, run on the driver before anything is written or trained.

`spec` checks everything the YAML alone decides when the job is loaded. What remains needs the data's classes
(`check_tasks`, after the source is listed and before a shard is written), the files the job names
(`check_weights`) or the hardware (`check_machine` before the embedded Ray starts,
`check_cluster` right after connecting to one). Each raises one `JobError` naming the job file and the key.
"""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from typing import Iterator

from cnnjobs.errors import JobError
from cnnjobs.metrics import TOP_K, Metric
from cnnjobs.spec import JobSpec, task_problems

DATA_CPUS = 1.0  # kept free for Ray Data's read/decode tasks (RAY_NOTES: the workers can starve the pipeline)
_NAMES_A_KEY = re.compile(r"^(data|model|train|scaling|output|tune)[.:]")  # a message that names a key first


def check_tasks(job: JobSpec, tasks: dict[str, list[str]]) -> None:
    """The keys that name tasks must fit the data's tasks and classes."""
    problems = task_problems(job, list(tasks))
    for task, classes in tasks.items():
        if len(classes) < 2:
            problems.append(("data.source", f"task {task!r} has {len(classes)} class"
                                            f"{'es' if len(classes) != 1 else ''} ({', '.join(classes) or 'none'}); "
                                            "a classifier needs two or more"))
    for key, monitor in job.train.monitors.items():
        metric = Metric.parse(monitor)
        if metric.kind == "top5" and metric.task in tasks and len(tasks[metric.task]) <= TOP_K:
            problems.append((key, f"{metric.task} has {len(tasks[metric.task])} classes; top5 needs more than "
                                  f"{TOP_K}"))
    for task, head in job.model.heads.items():
        if head.output == "sigmoid" and task in tasks and len(tasks[task]) != 2:
            problems.append((f"model.heads.{task}.output", f"sigmoid needs two classes ({task} has "
                                                           f"{len(tasks[task])})"))
    _raise_first(job, problems)


def check_storage(job: JobSpec, output: bool = True) -> None:
    """Every URI the job reads or writes (`output.dir` unless not `output`, `data.cache_dir`, a `parquet` source)
    must be storage this machine can use: the bucket exists, the credentials are accepted, the endpoint answers
    (see `storage.check`)."""
    from cnnjobs import storage

    locations = [("output.dir", job.output.dir)] if output else []
    locations.append(("data.cache_dir", job.data.cache_dir))
    if job.data.source.type == "parquet":
        locations.append(("data.source.path", job.data.source.path))
    for key, location in locations:
        storage.check(location, f"{job.source}: {key}")


def check_weights(job: JobSpec) -> None:
    """`model.weights` must be a state dict, read as the workers will read it (see `read_state_dict`)."""
    if job.model.weights:
        from cnnjobs.models.factory import read_state_dict

        read_state_dict(job.model.weights)


@contextmanager
def located(job: JobSpec) -> Iterator[None]:
    """Prefix errors that name a job key (but no file yet: those of the data and of these checks) with the job
    file, as the schema's own errors are."""
    try:
        yield
    except JobError as exc:
        if _NAMES_A_KEY.match(str(exc)):
            raise JobError(f"{job.source}: {exc}") from None
        raise


def check_machine(job: JobSpec, cpus: int | None = None, gpus: int | None = None) -> None:
    """Before starting the embedded Ray: the workers must fit this machine's cores (and GPUs, when asked for)."""
    cpus = (os.cpu_count() or 1) if cpus is None else cpus
    scaling = job.scaling
    need = scaling.num_workers * scaling.cpus_per_worker
    if need > cpus:
        _raise_first(job, [("scaling.num_workers", f"{scaling.num_workers} worker(s) x {scaling.cpus_per_worker:g} "
                                                   f"CPU need {need:g} CPUs but this machine has {cpus}; lower "
                                                   "scaling.num_workers or scaling.cpus_per_worker, or submit to a "
                                                   "cluster with --address")])
    if scaling.use_gpu is True:
        gpus = _local_gpus() if gpus is None else gpus
        _check_gpus(job, gpus, "this machine")


def check_cluster(job: JobSpec, resources: dict[str, float], in_process: bool) -> bool:
    """After connecting: the workers (and one CPU for data) must fit the cluster. Returns whether to use GPUs."""
    scaling = job.scaling
    gpus, cpus = resources.get("GPU", 0.0), resources.get("CPU", 0.0)
    if scaling.use_gpu is True:
        _check_gpus(job, gpus, "the Ray cluster")
    use_gpu = scaling.use_gpu is True or (scaling.use_gpu == "auto" and gpus >= scaling.num_workers)
    need = (0 if in_process else scaling.num_workers * scaling.cpus_per_worker) + DATA_CPUS
    if need > cpus:
        _raise_first(job, [("scaling.num_workers", f"{scaling.num_workers} worker(s) x {scaling.cpus_per_worker:g} "
                                                   f"CPU + {DATA_CPUS:g} for data need {need:g} CPUs but the Ray "
                                                   f"cluster has {cpus:g}")])
    return use_gpu


def _check_gpus(job: JobSpec, gpus: float, where: str) -> None:
    if gpus < job.scaling.num_workers:
        _raise_first(job, [("scaling.use_gpu", f"true needs {job.scaling.num_workers} GPU(s), one per worker, but "
                                               f"{where} has {gpus:g}; set scaling.use_gpu: auto (GPU when there "
                                               "is one) or false")])


def _local_gpus() -> int:
    import torch

    return torch.cuda.device_count()


def _raise_first(job: JobSpec, problems: list[tuple[str, str]]) -> None:
    for key, problem in problems:
        raise JobError(f"{job.source}: {key}: {problem}")
