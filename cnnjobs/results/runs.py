"""Finding and reading past runs: what `cnnjobs runs` lists and `cnnjobs show` opens."""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass
from glob import glob
from typing import Any

from cnnjobs import storage
from cnnjobs.errors import JobError
from cnnjobs.results.rundir import METRICS, SUMMARY

TUNE_RESULTS = "tune_results.csv"  # written by cnnjobs.tune: one row per trial


@dataclass(frozen=True)
class Run:
    """A run folder with its summary and per-epoch metrics."""

    path: str
    summary: dict[str, Any]

    @property
    def metrics(self) -> list[dict[str, str]]:
        """Rows of `metrics.csv` (strings, as written); empty before the first epoch ends."""
        return self._csv_rows(METRICS)

    @property
    def trials(self) -> list[dict[str, str]]:
        """Rows of a search's `tune_results.csv` (best first); empty for training runs."""
        return self._csv_rows(TUNE_RESULTS)

    def _csv_rows(self, name: str) -> list[dict[str, str]]:
        location = storage.join(self.path, name)
        if not storage.exists(location):
            return []
        return list(csv.DictReader(io.StringIO(storage.read_text(location))))


def load_run(path: str) -> Run:
    """Open the run folder at `path`."""
    location = storage.join(path, SUMMARY)
    if not storage.exists(location):
        raise JobError(f"{path}: not a run folder (no {SUMMARY})")
    try:
        return Run(path, json.loads(storage.read_text(location)))
    except json.JSONDecodeError as exc:
        raise JobError(f"{location}: unreadable summary ({exc.msg})") from None


def list_runs(root: str = "runs") -> list[Run]:
    """Every run under `root` (`<root>/<job>/<run id>/`), oldest first."""
    found = sorted(glob(os.path.join(os.path.expanduser(root), "*", "*", SUMMARY)),
                   key=lambda p: os.path.basename(os.path.dirname(p)))
    runs = []
    for path in found:
        try:
            runs.append(load_run(os.path.dirname(path)))
        except JobError:
            continue  # a half-written folder from a crash: listed by nobody, harmful to nobody
    return runs


def find_run(ref: str, root: str = "runs") -> Run:
    """A run by folder path, by run id, or by `job/run id`, looked up under `root`."""
    if storage.exists(storage.join(ref, SUMMARY)):
        return load_run(ref)
    matches = [run for run in list_runs(root)
               if ref in (run.summary.get("run_id"), f"{run.summary.get('job')}/{run.summary.get('run_id')}")]
    if not matches:
        raise JobError(f"{ref}: no such run (not a run folder, and no run id {ref!r} under {root}/)")
    if len(matches) > 1:
        raise JobError(f"{ref}: several runs match; give the run folder instead")
    return matches[0]
