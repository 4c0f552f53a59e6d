"""Finding and reading past runs: what `cnnjobs runs` lists and `show`, `predict`, `export`, `compare` open."""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass

import pyarrow.fs as pafs
import yaml

from cnnjobs import storage
from cnnjobs.errors import JobError
from cnnjobs.run import layout
from cnnjobs.run.summary import TrainSummary, TuneSummary, parse_summary
from cnnjobs.spec import JobSpec, validate_job


@dataclass(frozen=True)
class Run:
    """A run folder with its summary (None when the run never wrote one: `problem` says why)."""

    path: str
    summary: TrainSummary | TuneSummary | None
    problem: str | None = None

    @property
    def run_id(self) -> str:
        return self.summary.run_id if self.summary else storage.name(self.path)

    @property
    def job_name(self) -> str:
        return self.summary.job if self.summary else storage.name(storage.parent(self.path))

    def file(self, name: str) -> str:
        """Location of a file in the run folder."""
        return storage.join(self.path, name)

    def has(self, name: str) -> bool:
        """Whether the run folder holds `name`."""
        return storage.exists(self.file(name))

    @property
    def metrics(self) -> list[dict[str, str]]:
        """Rows of `metrics.csv` (strings, as written); empty before the first epoch ends."""
        return self._csv_rows(layout.METRICS)

    @property
    def trials(self) -> list[dict[str, str]]:
        """Rows of a search's `tune_results.csv` (best first); empty for training runs."""
        return self._csv_rows(layout.TUNE_RESULTS)

    def job(self) -> JobSpec:
        """The job as it ran (`job.yaml`, every default filled in)."""
        location = self.file(layout.JOB)
        if not storage.exists(location):
            raise JobError(f"{self.path}: incomplete run folder (no {layout.JOB})")
        return validate_job(yaml.safe_load(storage.read_text(location)), location)

    def trained(self) -> TrainSummary:
        """The summary of a finished training run with a best model; JobError saying what is missing otherwise."""
        if not isinstance(self.summary, TrainSummary):
            kind = self.summary.kind if self.summary else "incomplete"
            raise JobError(f"{self.path}: not a training run ({self.problem or f'kind {kind}'}); for a search, "
                           f"use the best trial's job: cnnjobs submit {self.path}/{layout.BEST_JOB}")
        if not self.summary.best_model or not self.has(layout.BEST_MODEL):
            raise JobError(f"{self.path}: the run has no {layout.BEST_MODEL} (status {self.summary.status}); "
                           "it did not finish an epoch")
        return self.summary

    def _csv_rows(self, name: str) -> list[dict[str, str]]:
        location = self.file(name)
        if not storage.exists(location):
            return []
        return list(csv.DictReader(io.StringIO(storage.read_text(location))))


def load_run(path: str) -> Run:
    """Open the run folder at `path`; JobError when it is not one or its summary cannot be read."""
    location = storage.join(path, layout.SUMMARY)
    if not storage.exists(location):
        if storage.exists(storage.join(path, layout.JOB)):
            return Run(path, None, f"no {layout.SUMMARY}: the run stopped before writing it")
        raise JobError(f"{path}: not a run folder (no {layout.SUMMARY})")
    try:
        raw = json.loads(storage.read_text(location))
    except json.JSONDecodeError as exc:
        raise JobError(f"{location}:{exc.lineno}:{exc.colno}: unreadable summary "
                       f"({exc.msg.removesuffix(' starting at')})") from None
    return Run(path, parse_summary(raw, location))


def list_runs(root: str = "runs", job: str | None = None, status: str | None = None) -> list[Run]:
    """Every run under `root` (`<root>/<job>/<run id>/`, a local folder or a URI), oldest first; optionally of one
    job or status.

    A folder whose summary is missing or unreadable (a run killed while starting) is listed with its problem.
    """
    storage.check(root, "--dir")
    root = root if storage.is_uri(root) else os.path.expanduser(root)
    folders = [storage.join(root, job_folder.base_name, run_folder.base_name)
               for job_folder in storage.list_dir(root) if job_folder.type == pafs.FileType.Directory
               for run_folder in storage.list_dir(storage.join(root, job_folder.base_name))
               if run_folder.type == pafs.FileType.Directory]
    runs = []
    for folder in sorted(folders, key=storage.name):
        try:
            run = load_run(folder)
        except JobError as exc:
            if "not a run folder" in str(exc):  # not a run: a folder of something else under root
                continue
            run = Run(folder, None, str(exc))
        if job is not None and run.job_name != job:
            continue
        if status is not None and (run.summary.status if run.summary else "incomplete") != status:
            continue
        runs.append(run)
    return runs


def find_run(ref: str, root: str = "runs") -> Run:
    """A run by folder path, by run id, or by `job/run id`, looked up under `root`."""
    if storage.exists(storage.join(ref, layout.SUMMARY)) or storage.exists(storage.join(ref, layout.JOB)):
        return load_run(ref)
    matches = [run for run in list_runs(root) if ref in (run.run_id, f"{run.job_name}/{run.run_id}")]
    if not matches:
        raise JobError(f"{ref}: no such run (not a run folder, and no run id {ref!r} under {root}/)")
    if len(matches) > 1:
        raise JobError(f"{ref}: several runs match; give the run folder instead")
    return matches[0]
