"""Runs and trials in MLflow: one MLflow run per cnnjobs run, a search as a parent run with one nested run per trial.

Off by default; `MLFLOW_TRACKING_URI` in the environment or an `output.mlflow` section in the job turns it on
(`enabled`). Everything is sent from the driver, by one background thread (`Outbox`) working through a queue in
order: training never waits for the tracking server, and a server that is down (at the start, or for a while in
the middle) only delays what is sent. What has not reached it when the run ends is listed in the summary
(`mlflow.unsent_epochs`); a `--resume` sends it then. No epoch is sent twice: before sending, and again after every
failure (a request may have arrived though its answer did not), the epochs the server holds are read back.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

from cnnjobs import storage
from cnnjobs.errors import JobError
from cnnjobs.results.epochs import metric_value
from cnnjobs.run import layout
from cnnjobs.run.folder import RunDir
from cnnjobs.run.summary import MlflowFacts, TrainSummary, TuneSummary
from cnnjobs.spec import JobSpec

log = logging.getLogger("cnnjobs")
STATUS = {"succeeded": "FINISHED", "failed": "FAILED", "interrupted": "KILLED", "running": "FAILED"}
FLUSH_S = 30.0  # how long the end of a run waits for what is still queued
PARAM_CHARS = 6000  # MLflow's longest parameter value
EXTRA = 'pip install "cnnjobs[mlflow]"'


def enabled(job: JobSpec) -> bool:
    """Whether the job is tracked: an `output.mlflow` section, or `MLFLOW_TRACKING_URI` in the environment."""
    return job.output.mlflow is not None or bool(os.environ.get("MLFLOW_TRACKING_URI"))


def check_client(job: JobSpec) -> None:
    """A tracked job needs the MLflow client: one line naming the extra to install, before anything starts."""
    if not enabled(job):
        return
    try:
        import mlflow  # noqa: F401
    except ImportError:
        asked = "output.mlflow" if job.output.mlflow is not None else "MLFLOW_TRACKING_URI"
        raise JobError(f"{job.source}: {asked}: tracking in MLflow is asked for but its client is not installed; "
                       f"{EXTRA}") from None


def flat_params(raw: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """The job as MLflow parameters: dotted keys, every value as text (lists and empty sections as JSON)."""
    out: dict[str, str] = {}
    for key, value in raw.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flat_params(value, dotted + "."))
        else:
            text = value if isinstance(value, str) else json.dumps(value)
            out[dotted] = text if len(text) <= PARAM_CHARS else text[:PARAM_CHARS - 1] + "…"
    return out


def epoch_metrics(row: dict[str, Any]) -> dict[str, float]:
    """The numbers of one epoch row (metrics.csv's), as MLflow metrics (the epoch is their step)."""
    values = {key: metric_value(value) for key, value in row.items() if key != "epoch"}
    return {key: value for key, value in values.items() if value is not None}


def _held_steps(client: Any, run_id: str, metrics: dict[str, float]) -> set[int]:
    """The epochs (steps) of `run_id` the server holds, read from the history of one of `metrics`' keys."""
    first = next(iter(metrics), None)
    return {metric.step for metric in client.get_metric_history(run_id, first)} if first else set()


def _log_epoch(client: Any, run_id: str, epoch: int, metrics: dict[str, float]) -> None:
    """One epoch's metrics in one request, at step = epoch."""
    from mlflow.entities import Metric

    stamp = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(key, value, stamp, epoch) for key, value in metrics.items()])


def git_commit(job_file: str) -> str | None:
    """The commit of the repository the job file sits in, if it sits in one."""
    folder = os.path.dirname(os.path.abspath(job_file)) if os.path.exists(job_file) else None
    if folder is None:
        return None
    try:
        done = subprocess.run(["git", "-C", folder, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


class Outbox:
    """Calls run one at a time, in order, by a background thread; a call that fails stays first and is tried again
    (pauses growing to 30 s); the first failure of an outage is one warning (`warn`)."""

    def __init__(self, where: str, warn: Callable[[str], None]) -> None:
        self.where, self.warn = where, warn
        self.queue: collections.deque[Callable[[], None]] = collections.deque()
        self.lock = threading.Condition()
        self.failing: str | None = None
        self.stopped = False
        self.urgent = False  # the run is ending: retry every second
        self.thread = threading.Thread(target=self._run, name="cnnjobs-mlflow", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """Drop what is left (the run has ended) and let the thread go."""
        with self.lock:
            self.queue.clear()
            self.stopped = True
            self.lock.notify_all()

    def put(self, call: Callable[[], None]) -> None:
        with self.lock:
            self.queue.append(call)
            self.lock.notify_all()

    def flush(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the queue to empty (retrying every second meanwhile); whether it did."""
        deadline = time.monotonic() + timeout
        with self.lock:
            self.urgent = True
            self.lock.notify_all()  # a pause between retries ends now
            while self.queue and time.monotonic() < deadline:
                self.lock.wait(timeout=min(0.2, max(deadline - time.monotonic(), 0)))
            return not self.queue

    def _run(self) -> None:
        pause = 1.0
        while True:
            with self.lock:
                while not self.queue and not self.stopped:
                    self.lock.wait()
                if self.stopped:
                    return
                call = self.queue[0]
            try:
                call()
            except Exception as exc:  # noqa: BLE001 - any failure of the tracking server: try again later
                if self.failing is None:
                    self.warn(f"MLflow at {self.where} does not answer ({str(exc).splitlines()[0][:160]}); the run "
                              "goes on, and what it misses is sent when it answers again")
                self.failing = str(exc).splitlines()[0][:300]
                with self.lock:
                    self.lock.wait(timeout=1.0 if self.urgent else pause)
                pause = min(pause * 2, 30.0)
                continue
            pause, self.failing = 1.0, None
            with self.lock:
                if self.queue and self.queue[0] is call:
                    self.queue.popleft()
                self.lock.notify_all()


class Tracking:
    """The MLflow side of one cnnjobs run (or search): create or continue its MLflow run, send its epochs, and at
    the end its test metrics, artifacts and status. Every method returns at once; the work is the outbox's."""

    def __init__(self, job: JobSpec, facts: MlflowFacts, warn: Callable[[str], None]) -> None:
        from mlflow.tracking import MlflowClient

        # The client's own retries would hold the outbox for minutes; it retries itself, without blocking anyone.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        self.job, self.facts = job, facts
        self.client = MlflowClient(tracking_uri=facts.tracking_uri)
        self.outbox = Outbox(facts.tracking_uri or "the default tracking URI", warn)
        self.sent: set[int] = set()  # epochs the server holds, once read back
        self.queued: list[int] = []  # epochs handed to the outbox and not sent yet
        self.known = False  # whether `sent` was read from the server since the last failure
        self.trials: dict[str, Trial] = {}

    @classmethod
    def start(cls, job: JobSpec, run: RunDir, summary: TrainSummary | TuneSummary, where: str | None = None,
              warn: Callable[[str], None] | None = None) -> "Tracking | None":
        """Track `run` (None when tracking is off): continue the MLflow run its summary names (a `--resume`), or
        create one in the job's experiment with the job as parameters and the run's tags. `warn` shows a line to
        the user (the live view's; else the `cnnjobs` logger)."""
        if not enabled(job):
            return None
        spec = job.output.mlflow
        uri = (spec.tracking_uri if spec else None) or os.environ.get("MLFLOW_TRACKING_URI")
        previous = summary.mlflow
        facts = MlflowFacts(tracking_uri=uri, experiment=(spec.experiment if spec else None) or job.name,
                            run_id=previous.run_id if previous else None)
        summary.mlflow = facts
        tracking = cls(job, facts, warn or log.warning)
        tags = {"cnnjobs.job": job.name, "cnnjobs.run_id": run.run_id, "cnnjobs.run_dir": run.location,
                "cnnjobs.kind": summary.kind, **({"cnnjobs.ray": where} if where else {}),
                **(spec.tags if spec else {})}
        commit = git_commit(job.source)
        if commit:
            tags["mlflow.source.git.commit"] = commit
        tracking.outbox.put(lambda: tracking._open(tags, flat_params(job.model_dump(mode="json"))))
        return tracking

    def _open(self, tags: dict[str, str], params: dict[str, str]) -> None:
        from mlflow.entities import Param, RunTag

        facts = self.facts
        if facts.run_id is None:  # a driver killed before its summary named the MLflow run: find it by its tags
            experiment = self.client.get_experiment_by_name(facts.experiment)
            found = self.client.search_runs([experiment.experiment_id], filter_string=(
                f"tags.`cnnjobs.run_id` = '{tags['cnnjobs.run_id']}'")) if experiment else []
            facts.run_id = next((run.info.run_id for run in found
                                 if run.data.tags.get("cnnjobs.run_dir") == tags["cnnjobs.run_dir"]), None)
        if facts.run_id is not None:  # a resumed run: the same MLflow run goes on
            facts.experiment_id = self.client.get_run(facts.run_id).info.experiment_id
            self.client.update_run(facts.run_id, status="RUNNING")
            return
        experiment = self.client.get_experiment_by_name(facts.experiment)
        facts.experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(
            facts.experiment)
        run_id = self.client.create_run(facts.experiment_id, tags=tags, run_name=tags["cnnjobs.run_id"]).info.run_id
        items = list(params.items())
        for start in range(0, len(items), 100):  # MLflow takes at most 100 parameters per request
            self.client.log_batch(run_id, params=[Param(k, v) for k, v in items[start:start + 100]],
                                  tags=[RunTag(k, v) for k, v in tags.items()] if not start else [])
        facts.run_id = run_id

    def epochs(self, rows: list[dict[str, Any]]) -> None:
        """Queue the epochs of `rows` not sent yet (called whenever metrics.csv changes)."""
        queued = {int(row["epoch"]) for row in rows} - self.sent - set(self.queued)
        for row in rows:
            epoch = int(row["epoch"])
            if epoch in queued:
                self.queued.append(epoch)
                self.outbox.put(lambda row=dict(row), epoch=epoch: self._send(epoch, row))

    def _send(self, epoch: int, row: dict[str, Any]) -> None:

        run_id = self.facts.run_id
        metrics = epoch_metrics(row)
        if not self.known:  # read back what the server holds: after a failure, a request may have arrived
            self.sent = _held_steps(self.client, run_id, metrics)
            self.known = True
        if epoch not in self.sent:
            try:
                _log_epoch(self.client, run_id, epoch, metrics)
            except Exception:
                self.known = False
                raise
            self.sent.add(epoch)
        self.queued.remove(epoch)

    def trial(self, trial_id: str) -> "Trial":
        """The nested run of one trial of a search (created when first used)."""
        if trial_id not in self.trials:
            self.trials[trial_id] = Trial(self, trial_id)
        return self.trials[trial_id]

    def close(self, summary: TrainSummary | TuneSummary) -> None:
        """Send what is queued (waiting up to `FLUSH_S`), record in the summary what could not be sent; then the
        artifacts and the MLflow status, which the run does not wait for beyond `FLUSH_S` either."""
        self.outbox.flush(FLUSH_S)
        self.facts.unsent_epochs = sorted(self.queued)
        self.facts.error = self.outbox.failing
        summary.mlflow = self.facts

    def finish(self, summary: TrainSummary | TuneSummary, run: RunDir) -> None:
        """After the summary is written: the run's files as artifacts, and its status."""
        files = [layout.JOB, layout.SUMMARY, layout.METRICS, layout.TUNE_RESULTS, layout.BEST_JOB]
        pictures = [entry.base_name for entry in storage.list_dir(run.location) if entry.base_name.endswith(".png")]
        status = STATUS[summary.status]
        self.outbox.put(lambda: self._artifacts(run, [*files, *pictures]))
        self.outbox.put(lambda: self.client.set_terminated(self.facts.run_id, status=status))
        if not self.outbox.flush(FLUSH_S):
            self.outbox.warn(f"MLflow at {self.outbox.where}: the run's artifacts and status were not sent "
                             f"({self.outbox.failing})")
        self.outbox.stop()

    def _artifacts(self, run: RunDir, names: list[str]) -> None:
        with tempfile.TemporaryDirectory(prefix="cnnjobs-mlflow-") as scratch:
            for name in names:
                try:
                    data = storage.read_bytes(run.path(name))
                except FileNotFoundError:
                    continue
                local = Path(scratch) / name
                local.write_bytes(data)
                self.client.log_artifact(self.facts.run_id, str(local))


class Trial:
    """One trial of a search as an MLflow run nested under the search's (tags `mlflow.parentRunId` and
    `cnnjobs.trial`): its sampled values as parameters, its epochs as metrics, how it ended as its status and the
    `cnnjobs.stopped_early` tag (stopped by ASHA)."""

    def __init__(self, parent: Tracking, trial_id: str) -> None:
        self.parent, self.trial_id = parent, trial_id
        self.run_id: str | None = None
        self.sent: set[int] = set()
        self.ended_as: str | None = None  # the end queued already (the search's end repeats what Tune said live)

    def _ensure(self, values: dict[str, Any]) -> str:
        from mlflow.entities import Param

        if self.run_id is not None:
            return self.run_id
        client, facts = self.parent.client, self.parent.facts
        found = client.search_runs([facts.experiment_id], filter_string=(
            f"tags.`mlflow.parentRunId` = '{facts.run_id}' and tags.`cnnjobs.trial` = '{self.trial_id}'"))
        if found:  # a resumed search: the trial's run goes on
            self.run_id = found[0].info.run_id
            self.sent = _held_steps(client, self.run_id, epoch_metrics(found[0].data.metrics))
            client.update_run(self.run_id, status="RUNNING")
            return self.run_id
        tags = {"mlflow.parentRunId": facts.run_id, "cnnjobs.trial": self.trial_id,
                "cnnjobs.job": self.parent.job.name}
        self.run_id = client.create_run(facts.experiment_id, tags=tags, run_name=self.trial_id).info.run_id
        client.log_batch(self.run_id, params=[Param(k, json.dumps(v) if not isinstance(v, str) else v)
                                              for k, v in values.items()])
        return self.run_id

    def result(self, values: dict[str, Any], row: dict[str, Any]) -> None:
        """Queue one epoch of the trial."""
        epoch = int(row["epoch"])

        def send() -> None:
            run_id = self._ensure(values)
            if epoch not in self.sent:
                _log_epoch(self.parent.client, run_id, epoch, epoch_metrics(row))
                self.sent.add(epoch)

        self.parent.outbox.put(send)

    def ended(self, values: dict[str, Any], status: str) -> None:
        """Queue the trial's end: `done`, `stopped` (by ASHA) or `error` (once per status)."""
        if status == self.ended_as:
            return
        self.ended_as = status

        def send() -> None:
            run_id = self._ensure(values)
            self.parent.client.set_tag(run_id, "cnnjobs.stopped_early", str(status == "stopped").lower())
            self.parent.client.set_terminated(run_id, status="FAILED" if status == "error" else "FINISHED")

        self.parent.outbox.put(send)
