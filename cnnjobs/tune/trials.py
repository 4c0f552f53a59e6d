"""A search's trials as rows: followed live by a Tune callback, ranked, and written to `tune_results.csv`."""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, field
from typing import Any, Callable

from ray import tune
from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY

from cnnjobs import storage
from cnnjobs.metrics import is_better, rank_key
from cnnjobs.run import layout
from cnnjobs.run.folder import RunDir
from cnnjobs.spec import JobSpec

TrialsCallback = Callable[[str, list["TrialRow"]], None]


@dataclass
class TrialRow:
    """One trial as the tables and `tune_results.csv` show it."""

    trial: str
    status: str  # pending, running, done, stopped (early), error
    values: dict[str, Any]
    epochs: int = 0
    last: float | None = None
    best: float | None = None
    best_epoch: int | None = None
    test_acc: float | None = None
    checkpoint: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)  # its epochs' metrics, when read back at the end

    def add(self, result: dict[str, Any], metric: str, mode: str) -> None:
        """Take one epoch's reported metrics."""
        self.epochs = int(result.get("epoch", self.epochs))
        self.last = result.get(metric)
        if self.last is not None and is_better(self.last, self.best, mode):
            self.best, self.best_epoch = self.last, self.epochs
        self.test_acc = result.get("test/acc", self.test_acc)
        self.checkpoint = result.get(CHECKPOINT_PATH_KEY, self.checkpoint)

    def record(self, rank: int, keys: list[str]) -> dict[str, Any]:
        """The row as `tune_results.csv` holds it (and `cnnjobs show` reads it back)."""
        return {"rank": rank, "trial": self.trial, "status": self.status, **{k: self.values.get(k) for k in keys},
                "epochs": self.epochs, "best": self.best, "best_epoch": self.best_epoch, "last": self.last,
                "test/acc": self.test_acc, "stopped_early": self.status == "stopped"}


def rank_rows(rows: list[TrialRow], mode: str) -> list[TrialRow]:
    """Best first by each trial's best epoch; trials without a result last; ties keep trial order."""
    return sorted(rows, key=lambda row: rank_key(row.best, mode))


def records(rows: list[TrialRow], keys: list[str]) -> list[dict[str, Any]]:
    """Ranked rows as records: what the tables show and `tune_results.csv` holds."""
    return [row.record(rank, keys) for rank, row in enumerate(rows, 1)]


def results_csv(rows: list[TrialRow], keys: list[str]) -> str:
    """`tune_results.csv`: rank, trial, status, the sampled values, epochs run, best and last metric, ..."""
    out = io.StringIO()
    writer = csv.DictWriter(out, ["rank", "trial", "status", *keys, "epochs", "best", "best_epoch", "last",
                                  "test/acc", "stopped_early"])
    writer.writeheader()
    writer.writerows(records(rows, keys))
    return out.getvalue()


class Tracker(tune.Callback):
    """Follows the trials on the driver: live rows for the table, and `tune_results.csv` as trials end."""

    def __init__(self, job: JobSpec, run: RunDir, notify: TrialsCallback, tracking: Any = None) -> None:
        self.job, self.run, self.notify, self.tracking = job, run, notify, tracking  # tracking: MLflow's, or None
        self.metric, self.mode = job.tune_metric
        self.keys = list(job.tune.space)
        self.rows: dict[str, TrialRow] = {}
        self.statuses: dict[str, str] = {}  # Tune's trial statuses at the end of its last step
        self.most_running = 0  # the most trials running at once, as the summary reports it

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its run config (with this callback) into the experiment state; a restore installs a new one.
        return {**self.__dict__, "notify": None, "rows": {}, "tracking": None}

    def row(self, trial: Any) -> TrialRow:
        if trial.trial_id not in self.rows:
            values = {k: trial.config.get(k) for k in self.keys}
            self.rows[trial.trial_id] = TrialRow(trial.trial_id, "pending", values)
        return self.rows[trial.trial_id]

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        # Kept from the last step: after an interruption Tune's cleanup marks every trial terminated.
        self.statuses = {trial.trial_id: trial.status for trial in trials}
        self.most_running = max(self.most_running, sum(trial.status == "RUNNING" for trial in trials))
        for trial in trials:
            row = self.row(trial)
            if row.status in ("pending", "running"):
                row.status = {"RUNNING": "running", "PENDING": "pending"}.get(trial.status, row.status)
        self.notify("tuning", self.ranked())

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        row = self.row(trial)
        row.add(result, self.metric, self.mode)
        if self.tracking is not None and "epoch" in result:
            self.tracking.trial(row.trial).result(row.values, result)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        row = self.row(trial)
        row.status = "done" if row.epochs >= self.job.train.epochs else "stopped"
        self.ended(row)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        row = self.row(trial)
        row.status = "error"
        self.ended(row)

    def ended(self, row: TrialRow) -> None:
        if self.tracking is not None:
            self.tracking.trial(row.trial).ended(row.values, row.status)
        self.save()

    def ranked(self) -> list[TrialRow]:
        return rank_rows(list(self.rows.values()), self.mode)

    def save(self) -> None:
        self.run.write_trials(results_csv(self.ranked(), self.keys))


def epoch_rows(reported: list[dict[str, Any]], trial_location: str) -> list[dict[str, Any]]:
    """A trial's epochs, one row each in order: what Tune recorded of its reports, its gaps filled by the rows its
    newest checkpoint carries (Tune's record misses the epochs reported after its last save when the search's
    driver was killed, and the trial then continued from a later checkpoint). Never beyond the last epoch Tune
    recorded: a trial ASHA stopped may have trained an epoch more before it was stopped. A later report of an
    epoch (trained again after a resume) wins."""
    from cnnjobs.run.checkpoints import resumable

    recorded = {int(row["epoch"]): row for row in reported if row.get("epoch") == row.get("epoch")
                and row.get("epoch") is not None}  # (NaN: a report without an epoch)
    last = max(recorded, default=0)
    if len(recorded) == last:  # no gap: nothing to read from the checkpoint
        return [recorded[epoch] for epoch in sorted(recorded)]
    by_epoch = {int(row["epoch"]): row for row in resumable(trial_location, [])[1] if int(row["epoch"]) <= last}
    by_epoch.update(recorded)
    return [by_epoch[epoch] for epoch in sorted(by_epoch)]


def rows_from_grid(grid: tune.ResultGrid, job: JobSpec, live: list[TrialRow],
                   run_location: str) -> list[TrialRow]:
    """Every trial of the search, from Tune's records (they include trials finished before a --resume) and the
    trials' checkpoints; trials that never started have no record there and come from the `live` rows."""
    metric, mode = job.tune_metric
    rows = []
    for result in grid:
        if not result.config or not result.metrics:
            continue
        row = TrialRow(result.metrics.get("trial_id") or os.path.basename(result.path.rstrip("/")), "pending",
                       {k: result.config.get(k) for k in job.tune.space})
        frame = result.metrics_dataframe
        row.history = epoch_rows(frame.to_dict("records") if frame is not None else [],
                                 storage.join(run_location, layout.TRIALS, row.trial))
        for record in row.history:
            row.add(record, metric, mode)
        if result.error is not None:
            row.status = "error"
        elif row.epochs:
            row.status = "done" if row.epochs >= job.train.epochs else "stopped"
        rows.append(row)
    seen = {row.trial for row in rows}
    return rank_rows(rows + [row for row in live if row.trial not in seen], mode)
