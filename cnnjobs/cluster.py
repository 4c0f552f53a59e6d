"""Sending a job to a Ray cluster through the Ray Jobs API (`cnnjobs submit JOB --address http://HEAD:8265`).

The job runs on the cluster as `cnnjobs submit JOB --json` with the current folder uploaded as its working_dir;
this side follows its log and returns the summary the remote run printed on its last line.
"""

from __future__ import annotations

import json
import os
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from cnnjobs import storage
from cnnjobs.errors import JobError
from cnnjobs.spec import JobSpec

_TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


@dataclass(frozen=True)
class ClusterRun:
    """The outcome of a job run through the Jobs API."""

    submission_id: str
    status: str  # SUCCEEDED, FAILED or STOPPED
    exit_code: int  # what `cnnjobs submit` exited with on the cluster (0, 1 or 2)
    summary: dict[str, Any] | None


def is_jobs_address(address: str | None) -> bool:
    """Ray Jobs API addresses are the dashboard's HTTP URL; others (ray://, host:port) connect a driver."""
    return bool(address) and address.startswith(("http://", "https://"))


def submit_to_cluster(job_path: str, job: JobSpec, overrides: list[str], address: str,
                      on_log: Callable[[str], None] = print, poll_s: float = 1.0) -> ClusterRun:
    """Submit `job_path` (inside the current folder, which is uploaded) and follow it to the end."""
    from ray.job_submission import JobSubmissionClient

    relative = os.path.relpath(Path(job_path).resolve(), Path.cwd())
    if relative.startswith(".."):
        raise JobError(f"{job_path}: must be inside the current folder, which is uploaded as the job's working_dir")
    if not storage.is_uri(job.output.dir) and not os.path.isabs(os.path.expanduser(job.output.dir)):
        raise JobError(f"{job_path}: output.dir: {job.output.dir!r} would land in the job's temporary working_dir "
                       "on the cluster; use a URI (s3://, gs://) or an absolute path on shared storage")
    command = ["cnnjobs", "submit", relative, *[arg for item in overrides for arg in ("--set", item)], "--json"]
    try:
        client = JobSubmissionClient(address)
        submission_id = client.submit_job(entrypoint=shlex.join(command), runtime_env={"working_dir": "."},
                                          metadata={"cnnjobs_job": job.name})
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise JobError(f"--address {address}: cannot submit to the Ray Jobs API: {str(exc).splitlines()[0]}") from None
    on_log(f"submitted {submission_id} to {address}")
    printed = 0
    try:
        while True:
            status = str(client.get_job_status(submission_id).value)
            logs = client.get_job_logs(submission_id)
            for line in logs[printed:].splitlines():
                on_log(line)
            printed = len(logs)
            if status in _TERMINAL:
                break
            time.sleep(poll_s)
    except KeyboardInterrupt:
        client.stop_job(submission_id)
        raise
    info = client.get_job_info(submission_id)
    return ClusterRun(submission_id, status, _exit_code(status, info.message or ""), _last_json(logs))


def _exit_code(status: str, message: str) -> int:
    if status == "SUCCEEDED":
        return 0
    return 2 if "exit code 2" in message else 1


def _last_json(logs: str) -> dict[str, Any] | None:
    for line in reversed(logs.strip().splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                return None
    return None
