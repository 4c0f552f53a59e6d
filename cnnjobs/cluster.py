"""Jobs on a Ray cluster through the Ray Jobs API: submit, follow, list, status, logs, stop.

`cnnjobs submit JOB --address http://HEAD:8265` runs `cnnjobs submit JOB --json` on the cluster with the current
folder uploaded as its working_dir, follows its log, and returns the summary the remote run printed on its last
line. Ray 2.60 clusters ask for a token (token authentication): when `RAY_AUTH_MODE` is unset and a token is at
hand (`RAY_AUTH_TOKEN`, `RAY_AUTH_TOKEN_PATH` or `~/.ray/auth_token`), cnnjobs sends it; a missing or refused
token is one line saying which.
"""

from __future__ import annotations

import json
import os
import shlex
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from cnnjobs import storage
from cnnjobs.errors import JobError
from cnnjobs.spec import JobSpec

TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


@dataclass(frozen=True)
class ClusterJob:
    """One job of the cluster, as `cnnjobs jobs` and `status` show it."""

    submission_id: str
    status: str  # PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED
    job: str | None  # the cnnjobs job name, for jobs submitted by cnnjobs
    entrypoint: str
    started: float | None  # seconds since the epoch
    ended: float | None
    message: str | None

    @property
    def exit_code(self) -> int:
        """What `cnnjobs submit` exited with on the cluster: 0, 2 for bad input, else 1."""
        if self.status == "SUCCEEDED":
            return 0
        return 2 if "exit code 2" in (self.message or "") else 1


@dataclass(frozen=True)
class ClusterRun:
    """The outcome of a job run through the Jobs API."""

    submission_id: str
    status: str  # SUCCEEDED, FAILED, STOPPED, or PENDING/RUNNING with --no-wait
    exit_code: int  # what `cnnjobs submit` exited with on the cluster (0, 1 or 2)
    summary: dict[str, Any] | None


def is_jobs_address(address: str | None) -> bool:
    """Ray Jobs API addresses are the dashboard's HTTP URL; others (ray://, host:port) connect a driver."""
    return bool(address) and address.startswith(("http://", "https://"))


def jobs_address(address: str | None) -> str:
    """`--address`, else RAY_ADDRESS, as a Jobs API (dashboard) URL."""
    address = address or os.environ.get("RAY_ADDRESS")
    if not is_jobs_address(address):
        raise JobError(f"--address: give the cluster's dashboard, e.g. --address http://HEAD:8265 (or set "
                       f"RAY_ADDRESS to it){f'; got {address!r}' if address else ''}")
    return address


def client(address: str | None) -> Any:
    """A Jobs API client for the cluster, sending the token when one is at hand; JobError when unreachable."""
    from ray._private.authentication.authentication_token_setup import maybe_enable_token_auth_if_token_available
    from ray.job_submission import JobSubmissionClient

    address = jobs_address(address)
    # Token authentication (Ray 2.60's default): with RAY_AUTH_MODE unset, use a token that is at hand
    # (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token), as `ray.init` does for a driver.
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
    with api_errors(address):
        return JobSubmissionClient(address)


@contextmanager
def api_errors(address: str | None) -> Iterator[None]:
    """Turn the Jobs API's connection and authentication errors into one line naming the address."""
    from ray.exceptions import AuthenticationError

    try:
        yield
    except AuthenticationError as exc:
        if "Authentication required" in str(exc):
            raise JobError(f"--address {address}: the cluster requires a token (Ray's token authentication); put "
                           "the head's token in ~/.ray/auth_token or RAY_AUTH_TOKEN") from None
        raise JobError(f"--address {address}: the cluster refused the token; copy the head's ~/.ray/auth_token "
                       "(or set RAY_AUTH_TOKEN) again") from None
    except (ConnectionError, OSError) as exc:
        raise JobError(f"--address {address}: cannot reach the Ray Jobs API ({str(exc).splitlines()[0]}); is the "
                       "cluster up and its dashboard port forwarded?") from None


def submit_to_cluster(job_path: str, job: JobSpec, overrides: list[str], address: str | None, *, wait: bool = True,
                      on_log: Callable[[str], None] = print, poll_s: float = 1.0) -> ClusterRun:
    """Submit `job_path` (inside the current folder, which is uploaded); follow it to the end unless not `wait`."""
    relative = os.path.relpath(Path(job_path).resolve(), Path.cwd())
    if relative.startswith(".."):
        raise JobError(f"{job_path}: must be inside the current folder, which is uploaded as the job's working_dir")
    if not storage.is_uri(job.output.dir) and not os.path.isabs(os.path.expanduser(job.output.dir)):
        raise JobError(f"{job_path}: output.dir: {job.output.dir!r} would land in the job's temporary working_dir "
                       "on the cluster; use a URI (s3://, gs://) or an absolute path on shared storage")
    command = ["cnnjobs", "submit", relative, *[arg for item in overrides for arg in ("--set", item)], "--json"]
    jobs = client(address)
    with api_errors(jobs_address(address)):
        submission_id = jobs.submit_job(entrypoint=shlex.join(command), runtime_env={"working_dir": "."},
                                        metadata={"cnnjobs_job": job.name})
    on_log(f"submitted {submission_id} to {jobs_address(address)}")
    if not wait:
        return ClusterRun(submission_id, "PENDING", 0, None)
    try:
        logs = "".join(follow_logs(address, submission_id, on_log, poll_s))
    except KeyboardInterrupt:
        jobs.stop_job(submission_id)
        raise
    info = status(address, submission_id)
    return ClusterRun(submission_id, info.status, info.exit_code, _last_json(logs))


def list_jobs(address: str | None) -> list[ClusterJob]:
    """Every job the cluster knows, oldest first."""
    jobs = client(address)
    with api_errors(jobs_address(address)):
        found = jobs.list_jobs()
    return sorted((_job(info) for info in found if info.submission_id), key=lambda job: job.started or 0)


def status(address: str | None, submission_id: str) -> ClusterJob:
    """One job's status; JobError when the cluster has no such job."""
    jobs = client(address)
    with api_errors(jobs_address(address)):
        try:
            return _job(jobs.get_job_info(submission_id))
        except RuntimeError as exc:
            raise JobError(f"{submission_id}: no such job on {jobs_address(address)} "
                           f"({str(exc).splitlines()[0][:120]})") from None


def follow_logs(address: str | None, submission_id: str, on_log: Callable[[str], None] = print,
                poll_s: float = 1.0, follow: bool = True) -> Iterator[str]:
    """Hand each new log line to `on_log` (and yield the new text) until the job ends, or once without `follow`."""
    status(address, submission_id)  # an unknown job is one line, not a stack of HTTP errors
    jobs = client(address)
    printed = 0
    while True:
        with api_errors(jobs_address(address)):
            state = str(jobs.get_job_status(submission_id).value)
            logs = jobs.get_job_logs(submission_id)
        fresh = logs[printed:]
        for line in fresh.splitlines():
            on_log(line)
        printed = len(logs)
        yield fresh
        if not follow or state in TERMINAL:
            return
        time.sleep(poll_s)


def stop(address: str | None, submission_id: str, wait_s: float = 60.0) -> ClusterJob:
    """Stop a job and wait (up to `wait_s`) until the cluster says it has ended; returns its status then."""
    current = status(address, submission_id)
    if current.status in TERMINAL:
        return current
    with api_errors(jobs_address(address)):
        client(address).stop_job(submission_id)
    deadline = time.time() + wait_s
    while current.status not in TERMINAL and time.time() < deadline:
        time.sleep(0.5)
        current = status(address, submission_id)
    return current


def _job(info: Any) -> ClusterJob:
    started = info.start_time / 1000 if info.start_time else None
    ended = info.end_time / 1000 if info.end_time else None
    return ClusterJob(info.submission_id, str(info.status.value), (info.metadata or {}).get("cnnjobs_job"),
                      info.entrypoint, started, ended, info.message)


def _last_json(logs: str) -> dict[str, Any] | None:
    for line in reversed(logs.strip().splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                return None
    return None
