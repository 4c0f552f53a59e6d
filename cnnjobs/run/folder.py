"""The run folder `<output.dir>/<job name>/<run id>/`: where each of its files lives, and writing them safely.

Ray Train writes its checkpoints into the same folder (it is the trainer's `storage_path/name`), so one folder
holds everything about a run. `output.dir` may be a URI (s3://, gs://); only `logs/` is always local and is
uploaded when the run ends. Every file is written whole or not at all (a temporary file, then a rename), so a
crash or a full disk leaves the previous version intact.
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
from cnnjobs.errors import JobError
from cnnjobs.run import layout
from cnnjobs.run.summary import TrainSummary, TuneSummary


def new_run_id() -> str:
    """Sortable by start time, unique across concurrent submits."""
    return datetime.now().strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)


def utc_now() -> str:
    """ISO 8601 timestamp for summaries."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class RunDir:
    """One run's folder; a local path or a URI."""

    location: str
    job_name: str
    run_id: str
    started: float = field(default_factory=time.time)  # of this session (a resumed run has several)

    @classmethod
    def create(cls, output_dir: str, job_name: str, job_yaml: str) -> "RunDir":
        """Make a new, never-used run folder and write the resolved job into it."""
        run_id = new_run_id()
        location = storage.join(output_dir, job_name, run_id)
        fs, path = storage.resolve(location)
        if fs.get_file_info(path).type != pafs.FileType.NotFound:
            raise FileExistsError(f"run folder {location} exists already")  # never reused (ids are unique)
        try:
            fs.create_dir(path, recursive=True)
        except OSError as exc:
            raise JobError(f"output.dir: cannot create the run folder {location}: {exc}") from None
        run = cls(location, job_name, run_id)
        os.makedirs(run.logs_dir, exist_ok=True)
        storage.write_text(run.path(layout.JOB), job_yaml)
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
        return os.path.join(storage.resolve(self.location)[1], layout.LOGS)

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
        storage.write_text(self.path(layout.METRICS), out.getvalue())

    def write_summary(self, summary: TrainSummary | TuneSummary) -> None:
        """`summary.json`, rewritten as the run progresses (status `running`, then its outcome)."""
        storage.write_text(self.path(layout.SUMMARY), json.dumps(summary.model_dump(mode="json"), indent=1))

    def log_traceback(self, text: str) -> str:
        """Append a traceback to `logs/cnnjobs.log`; returns the log's path."""
        path = os.path.join(self.logs_dir, layout.CNNJOBS_LOG)
        os.makedirs(self.logs_dir, exist_ok=True)
        with open(path, "a") as out:
            out.write(f"{utc_now()}\n{text}\n")
        return path

    def upload_logs(self) -> None:
        """Copy local logs next to the run when the run folder is remote."""
        if storage.is_uri(self.location):
            fs, path = storage.resolve(self.path(layout.LOGS))
            pafs.copy_files(self.logs_dir, path, destination_filesystem=fs)
