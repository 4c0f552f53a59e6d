"""The run folder `<output.dir>/<job name>/<run id>/` and the one writer of each of its files.

Ray Train writes its checkpoints into the same folder (it is the trainer's `storage_path/name`, and cnnjobs hands
Ray the upload, see `run.checkpoints`), so one folder holds everything about a run. `output.dir` may be a URI
(s3://, gs://): every file goes through `cnnjobs.storage`, which writes it whole on every storage (a temporary file
and a rename locally, one PUT on an object store) and retries transient errors. Log files are written locally
(`logs_dir`: inside the run folder, or a temporary folder for a remote run) and, for a remote run, uploaded as the
run goes (`sync_logs`), so a lost driver leaves its logs up to the last epoch in the bucket.
"""

from __future__ import annotations

import csv
import hashlib
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

LOG_SYNC_S = 15.0  # a remote run's logs are uploaded at most this often while it runs, and at its end


def new_run_id() -> str:
    """Sortable by start time, unique across concurrent submits."""
    return datetime.now().strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)


def utc_now() -> str:
    """ISO 8601 timestamp for summaries."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def local_logs(location: str) -> str:
    """The local folder where the logs of the run at `location` are written: its own `logs/`, or for a remote run
    a temporary folder named after the run (and uploaded by `upload_logs`)."""
    if not storage.is_uri(location):
        return os.path.join(storage.local_path(location), layout.LOGS)
    digest = hashlib.sha256(location.encode()).hexdigest()[:12]
    return os.path.join(tempfile.gettempdir(), "cnnjobs-logs", f"{storage.name(location)}-{digest}")


def upload_logs(location: str, local: str | None = None, uploaded: dict[str, tuple[int, int]] | None = None) -> None:
    """Copy the local log files of a remote run into its `logs/` (each file whole; nothing to do for a local run).
    `local` is a folder of logs other than the run's own (e.g. a prediction's), uploaded into `logs/<its name>/`.
    `uploaded` (path -> size and mtime at its last upload, kept by the caller) skips the files unchanged since."""
    if not storage.is_uri(location):
        return
    source = local or local_logs(location)
    target = storage.join(location, layout.LOGS, *([os.path.basename(source)] if local else []))
    for root, _, names in os.walk(source):
        for entry in names:
            path = os.path.join(root, entry)
            stat = os.stat(path)  # before the read: a write after it shows at the next upload
            stamp = (stat.st_size, stat.st_mtime_ns)
            if uploaded is not None and uploaded.get(path) == stamp:
                continue
            relative = os.path.relpath(path, source).split(os.sep)
            with open(path, "rb") as handle:
                storage.write_bytes(storage.join(target, *relative), handle.read())
            if uploaded is not None:
                uploaded[path] = stamp


@dataclass
class RunDir:
    """One run's folder (a local path or a URI) and the writer of its files."""

    location: str
    job_name: str
    run_id: str
    started: float = field(default_factory=time.time)  # of this session (a resumed run has several)
    _synced: float = 0.0  # when the logs were last uploaded (remote runs)
    _uploaded: dict[str, tuple[int, int]] = field(default_factory=dict)  # each log file as last uploaded

    @classmethod
    def create(cls, output_dir: str, job_name: str, job_yaml: str) -> "RunDir":
        """Make a new, never-used run folder and write the resolved job into it."""
        run_id = new_run_id()
        location = storage.join(output_dir, job_name, run_id)
        if storage.exists(location):
            raise FileExistsError(f"run folder {location} exists already")  # never reused (ids are unique)
        if not storage.is_uri(location):  # object stores have no folders: the first file makes it
            try:
                os.makedirs(storage.local_path(location))
            except OSError as exc:
                raise JobError(f"output.dir: cannot create the run folder {location}: {exc}") from None
        run = cls(location, job_name, run_id)
        os.makedirs(run.logs_dir, exist_ok=True)
        run.write_job(job_yaml)
        return run

    @property
    def ray_storage(self) -> tuple[str, pafs.FileSystem | None]:
        """`(storage_path, storage_filesystem)` for Ray's RunConfig; Ray's run `name` is the run id, so Ray writes
        into this folder."""
        return storage.for_ray(storage.parent(self.location))

    @property
    def logs_dir(self) -> str:
        """The local folder for log files (see `local_logs`)."""
        return local_logs(self.location)

    def path(self, name: str) -> str:
        """Location of a file in the run folder."""
        return storage.join(self.location, name)

    def write_job(self, job_yaml: str) -> None:
        """`job.yaml`: the job as it runs (written when the run starts, again when `--resume --force` changes it)."""
        storage.write_text(self.path(layout.JOB), job_yaml)

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
        self.sync_logs()

    def write_summary(self, summary: TrainSummary | TuneSummary) -> None:
        """`summary.json`, rewritten as the run progresses (status `running`, then its outcome)."""
        storage.write_text(self.path(layout.SUMMARY), json.dumps(summary.model_dump(mode="json"), indent=1))

    def write_skipped(self, table: str) -> None:
        """`skipped.csv`: the images and rows left out of the data, with the reason."""
        storage.write_text(self.path(layout.SKIPPED), table)

    def write_best_model(self, state_dict: bytes) -> None:
        """`best_model.pt`: the best epoch's weights (a saved state dict)."""
        storage.write_bytes(self.path(layout.BEST_MODEL), state_dict)

    def write_trials(self, table: str) -> None:
        """A search's `tune_results.csv`: one row per trial, best first."""
        storage.write_text(self.path(layout.TUNE_RESULTS), table)

    def write_best_job(self, job_yaml: str) -> None:
        """A search's `best_job.yaml`: the job with the winning values, ready for `cnnjobs submit`."""
        storage.write_text(self.path(layout.BEST_JOB), job_yaml)

    def log_traceback(self, text: str) -> str:
        """Append a traceback to `logs/cnnjobs.log`; returns the log's path."""
        path = os.path.join(self.logs_dir, layout.CNNJOBS_LOG)
        os.makedirs(self.logs_dir, exist_ok=True)
        with open(path, "a") as out:
            out.write(f"{utc_now()}\n{text}\n")
        return path

    def sync_logs(self, force: bool = False) -> None:
        """Upload a remote run's logs, at most every `LOG_SYNC_S` seconds unless `force`."""
        if not storage.is_uri(self.location) or (not force and time.time() - self._synced < LOG_SYNC_S):
            return
        self._synced = time.time()
        upload_logs(self.location, uploaded=self._uploaded)
