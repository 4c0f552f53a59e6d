"""`cnnjobs submit --resume RUN`: continue an interrupted run in its own folder from its newest checkpoint.

The run continues with the job it trained with; a job that differs from it (a job file given again, `--set`, or
an edited `job.yaml`) is refused with the differences listed, unless `--force`. A finished run is refused, and so
is one whose driver is still alive on this machine.
"""

from __future__ import annotations

import os
import socket
from typing import Any

import yaml

from cnnjobs import storage
from cnnjobs.errors import JobError
from cnnjobs.run import checkpoints, layout
from cnnjobs.run.find import find_run
from cnnjobs.run.folder import RunDir
from cnnjobs.run.summary import TrainSummary
from cnnjobs.spec import JobSpec, load_job, validate_job
from cnnjobs.train.runner import Reopened

_IGNORED = ("description", "output")  # keys that do not change what a run trains


def reopen(ref: str, job: JobSpec | None, *, overrides: list[str] | tuple[str, ...] = (), root: str = "runs",
           force: bool = False) -> tuple[Reopened, JobSpec]:
    """The run to continue, with the epochs it keeps (those up to its newest loadable checkpoint), and its job."""
    found = find_run(ref, root)
    summary = found.summary
    if not isinstance(summary, TrainSummary):
        if summary is None:
            raise JobError(f"{ref}: incomplete run folder ({found.problem}); start it again with "
                           f"cnnjobs submit {found.file(layout.JOB)}")
        raise JobError(f"{ref}: a search; continue it with cnnjobs tune --resume {ref}")
    if summary.status == "succeeded":
        raise JobError(f"{ref}: the run finished already (succeeded at epoch {summary.epochs_run}); nothing to "
                       f"resume. To train again: cnnjobs submit {found.file(layout.JOB)}")
    if summary.status == "running" and _driver_alive(summary.driver) and not force:
        raise JobError(f"{ref}: still running (driver {summary.driver}); stop it first, or --force if it is gone")
    saved = found.job()
    if job is None and overrides:
        job = load_job(found.file(layout.JOB), list(overrides))
    recorded = [_numbers(row) for row in found.metrics]
    loaded, rows, passed = checkpoints.resumable(found.path, recorded)
    trained_with = loaded.state["job"] if loaded is not None else saved.model_dump(mode="json")
    wanted = job or saved
    changes = job_changes(trained_with, wanted.model_dump(mode="json"))
    if changes and not force:
        raise JobError(f"{ref}: the job differs from the one the run trained with: {'; '.join(changes)}; "
                       "resume without changes, or add --force to continue with the changed job")
    run = RunDir(found.path, summary.job, summary.run_id)
    if changes:
        run.write_job(wanted.to_yaml())
    wanted = validate_job(yaml.safe_load(storage.read_text(found.file(layout.JOB))), found.file(layout.JOB))
    start = f"from {loaded.name}" if loaded is not None else "from the start: no checkpoint yet"
    return Reopened(run, summary, rows, recorded, [start, *(f"passed over {note}" for note in passed)]), wanted


def job_changes(before: dict[str, Any], after: dict[str, Any], prefix: str = "") -> list[str]:
    """`key: old -> new` for every key whose value differs (sections compared key by key)."""
    changes = []
    for key in sorted(set(before) | set(after)):
        dotted = f"{prefix}{key}"
        if not prefix and key in _IGNORED:
            continue
        old, new = before.get(key), after.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            changes += job_changes(old, new, dotted + ".")
        elif old != new:
            changes.append(f"{dotted}: {old!r} -> {new!r}")
    return changes


def _driver_alive(driver: str | None) -> bool:
    """Whether the driver `host:pid` that wrote the summary is a live process on this machine."""
    if not driver or ":" not in driver:
        return False
    host, pid = driver.rsplit(":", 1)
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return int(pid) != os.getpid()


def _numbers(row: dict[str, str]) -> dict[str, Any]:
    """A metrics.csv row with its numbers back (empty cells dropped)."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if value in ("", None):
            continue
        number = float(value)
        out[key] = int(number) if key in ("epoch", "best_epoch", "stopped_early") else number
    return out
