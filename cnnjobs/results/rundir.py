"""The run directory: `<output.dir>/<job name>/<run id>/` with the resolved job, metrics, summary and logs.

Ray Train writes its checkpoints into the same folder (it is the trainer's `storage_path/name`), so one folder
holds everything about a run. `output.dir` may be a URI (s3://, gs://); only `logs/` is always local and is
uploaded when the run ends.
"""

from __future__ import annotations

import csv
import io
import json
import os
import secrets
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import pyarrow.fs as pafs

from cnnjobs import storage
from cnnjobs.spec import JobSpec

SUMMARY = "summary.json"
METRICS = "metrics.csv"
JOB = "job.yaml"


def new_run_id() -> str:
    """Sortable by start time, unique across concurrent submits."""
    return datetime.now().strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)


@dataclass
class RunDir:
    """One run's folder; local path or URI."""

    location: str
    job_name: str
    run_id: str
    started: float = field(default_factory=time.time)

    @classmethod
    def create(cls, job: JobSpec, run_id: str | None = None) -> "RunDir":
        """Make a new, never-used run folder for `job` and write the resolved `job.yaml` into it."""
        run_id = run_id or new_run_id()
        location = storage.join(job.output.dir, job.name, run_id)
        if storage.exists(location):
            raise FileExistsError(f"run folder {location} exists already")
        run = cls(location, job.name, run_id)
        fs, path = storage.resolve(location)
        fs.create_dir(path, recursive=True)
        os.makedirs(run.logs_dir, exist_ok=True)
        storage.write_text(run.path(JOB), job.to_yaml())
        return run

    @property
    def storage_parent(self) -> str:
        """What Ray Train gets as `storage_path` (its run `name` is our run id)."""
        if storage.is_uri(self.location):
            return self.location.rsplit("/", 1)[0]
        return os.path.dirname(storage.resolve(self.location)[1])

    @property
    def logs_dir(self) -> str:
        """A local folder for log files: inside the run folder, or a temporary one uploaded at the end."""
        if storage.is_uri(self.location):
            return os.path.join(tempfile.gettempdir(), "cnnjobs-logs", self.job_name, self.run_id)
        return os.path.join(storage.resolve(self.location)[1], "logs")

    def path(self, name: str) -> str:
        """Location of a file in the run folder."""
        return storage.join(self.location, name)

    def write_metrics(self, rows: list[dict[str, Any]]) -> None:
        """`metrics.csv`: one row per epoch, columns in first-seen order."""
        columns: list[str] = []
        for row in rows:
            columns += [key for key in row if key not in columns and not isinstance(row[key], dict)]
        out = io.StringIO()
        writer = csv.DictWriter(out, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        storage.write_text(self.path(METRICS), out.getvalue())

    def write_summary(self, summary: dict[str, Any]) -> None:
        """`summary.json`, rewritten as the run progresses (status `running`, then `succeeded`/`failed`)."""
        storage.write_text(self.path(SUMMARY), json.dumps(summary, indent=1, default=str))

    def upload_logs(self) -> None:
        """Copy local logs next to the run when the run folder is remote."""
        if storage.is_uri(self.location):
            fs, path = storage.resolve(self.path("logs"))
            pafs.copy_files(self.logs_dir, path, destination_filesystem=fs)


def utc_now() -> str:
    """ISO 8601 timestamp for summaries."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
