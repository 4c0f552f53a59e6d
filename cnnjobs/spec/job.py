"""The whole job: its sections, and the rules that involve more than one of them."""

from __future__ import annotations

import yaml
from pydantic import Field, PrivateAttr

from cnnjobs.metrics import Metric, Mode, metric_mode
from cnnjobs.models import catalog
from cnnjobs.spec.base import Section
from cnnjobs.spec.data import DataSpec
from cnnjobs.spec.model import ModelSpec
from cnnjobs.spec.scaling import OutputSpec, ScalingSpec
from cnnjobs.spec.train import TrainSpec
from cnnjobs.spec.tune import TuneSpec


class JobSpec(Section):
    """One training job."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="Job name; names the run folder.")
    description: str = Field("", description="Free text shown by `cnnjobs show`.")
    data: DataSpec
    model: ModelSpec
    train: TrainSpec = Field(default_factory=TrainSpec)
    scaling: ScalingSpec = Field(default_factory=ScalingSpec)
    output: OutputSpec = Field(default_factory=OutputSpec)
    tune: TuneSpec | None = Field(None, description="A search over this job's keys, run by `cnnjobs tune`.")

    _source: str | None = PrivateAttr(None)  # the YAML file it was loaded from, for error messages

    def __eq__(self, other: object) -> bool:
        # The same job whatever file it was read from: `_source` only names that file in messages.
        return isinstance(other, JobSpec) and self.__dict__ == other.__dict__

    __hash__ = None  # mutable-looking containers inside: not hashable, as pydantic models are by default

    @property
    def source(self) -> str:
        """The job file this spec came from ("the job" for specs built in code)."""
        return self._source or "the job"

    def to_yaml(self) -> str:
        """The resolved job (defaults filled in) as YAML that `load_job` reads back to an equal spec."""
        return yaml.safe_dump(self.model_dump(mode="json", exclude={"tune"} if self.tune is None else None),
                              sort_keys=False)

    @property
    def tune_metric(self) -> tuple[str, Mode]:
        """The metric and mode that rank the trials of a search: `tune.metric`, else `train.monitor`."""
        if self.tune is None or self.tune.metric is None:
            return self.train.monitor, (self.tune and self.tune.mode) or self.train.monitor_mode
        return self.tune.metric, self.tune.mode or metric_mode(self.tune.metric)


def cross_checks(job: JobSpec) -> list[tuple[str, str]]:
    """Rules that involve two sections, as (dotted key, problem); all of them hold before anything runs."""
    problems = []
    if job.train.batch_size % job.scaling.num_workers:
        problems.append(("train.batch_size", f"the batch ({job.train.batch_size}) must split evenly among "
                                             f"scaling.num_workers ({job.scaling.num_workers})"))
    arch = catalog.architecture(job.model.arch)
    if min(job.data.image_size) < arch.min_size:
        problems.append(("data.image_size", f"{arch.name} needs images of at least {arch.min_size} px "
                                            f"(got {list(job.data.image_size)})"))
    problems += job.model.option_problems()
    if job.scaling.in_process is True and job.scaling.num_workers != 1:
        problems.append(("scaling.in_process", f"true runs one loop in the driver process; it cannot run "
                                               f"{job.scaling.num_workers} workers (set it to auto or false)"))
    problems += task_problems(job, job.data.task_names)
    return problems


def task_problems(job: JobSpec, tasks: list[str] | None) -> list[tuple[str, str]]:
    """Keys that name a task the data does not have: monitored metrics (`val/<task>/acc`) and `model.heads`."""
    if tasks is None:
        return []
    known = ", ".join(tasks)
    problems = []
    for key, monitor in [*job.train.monitors.items(), *([("tune.metric", job.tune.metric)]
                                                        if job.tune and job.tune.metric else [])]:
        task = Metric.parse(monitor).task
        if task is not None and task not in tasks:
            problems.append((key, f"no task {task!r} in the data (tasks: {known})"))
    for task in job.model.heads:
        if task not in tasks:
            problems.append((f"model.heads.{task}", f"no task {task!r} in the data (tasks: {known})"))
    return problems
