"""`cnnjobs tune`: the `tune:` section, the CPU budget, and a small ASHA search interrupted and resumed."""

from __future__ import annotations

import csv
import io
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from cnnjobs.cli.render import trials_table
from cnnjobs.errors import JobError
from cnnjobs.spec import load_job
from cnnjobs.tune import TrialRow, num_trials, plan_concurrency, rank_rows, results_csv, sampler, search_space
from tests.cli.test_cli import cnnjobs
from tests.conftest import REPO, cli_env

SPACE = {"train.lr": {"grid": [0.05, 0.0001, 0.00005]}}


def tune_job(write_job, tune: dict | None = None, **changes) -> Path:
    """The quickstart job, tiny (16 px digits, 4 epochs), with a `tune:` section."""
    base = {"data.image_size": 16, "train.epochs": 4, "scaling.use_gpu": False,
            "tune": tune or {"space": SPACE, "grace_period": 1, "reduction_factor": 2}}
    return write_job({**base, **changes})


def error_of(path: Path) -> str:
    with pytest.raises(JobError) as caught:
        load_job(path)
    return str(caught.value)


def test_space_errors_name_the_file_line_and_searched_key(write_job):
    def space(**keys) -> str:
        path = tune_job(write_job, {"space": keys})
        return error_of(path)

    line = lambda path, key: next(n for n, text in enumerate(path.read_text().splitlines(), 1) if key in text)
    message = space(**{"train.lrr": {"choice": [0.1]}})
    path = Path(message.split(":")[0])
    assert message == f"{path}:{line(path, 'train.lrr')}: tune.space.train.lrr: not a job key " \
                      "(unknown key; did you mean 'lr'?)"
    assert "tune.space.model.arch: value 'lenet6': unknown architecture 'lenet6'; did you mean 'lenet5'?" in \
        space(**{"model.arch": {"choice": ["lenet5", "lenet6"]}})
    assert "tune.space.model.dropout: value 1.0: must be < 1" in space(**{"model.dropout": {"uniform": [0, 1]}})
    assert "tune.space.train.batch_size: value 33: the batch (33) must split evenly" in \
        error_of(tune_job(write_job, {"space": {"train.batch_size": {"choice": [32, 33]}}},
                          **{"scaling.num_workers": 2}))
    assert "cannot search 'data.image_size'" in space(**{"data.image_size": {"choice": [16, 32]}})
    assert "give exactly one of choice, grid" in space(**{"train.lr": {"choice": [0.1], "grid": [0.2]}})
    assert "low must be < high" in space(**{"train.lr": {"loguniform": [0.1, 0.001]}})


def test_space_becomes_tune_samplers_and_metric_defaults_to_monitor(write_job):
    job = load_job(tune_job(write_job, {"space": {
        "model.dropout": {"uniform": [0.0, 0.5]}, "train.lr": {"loguniform": ["1e-4", "1e-1"]},
        "train.batch_size": {"choice": [16, 32]}, "train.optimizer": {"grid": ["sgd", "adam"]}},
        "num_samples": 3}))
    space = search_space(job.tune)
    assert space["train.optimizer"] == {"grid_search": ["sgd", "adam"]}
    assert (space["train.lr"].lower, space["train.lr"].upper) == (1e-4, 1e-1)  # YAML's 1e-4 is a string
    assert space["train.batch_size"].categories == [16, 32]
    assert num_trials(job.tune) == 6
    assert job.tune_metric == ("val/acc", "max")
    loss = load_job(tune_job(write_job, {"space": SPACE, "metric": "val/loss"}))
    assert loss.tune_metric == ("val/loss", "min")


def sampled(job) -> list[dict]:
    """The trials' values in the order Tune would start them."""
    alg = sampler(job)
    alg.add_configurations({"s": {"run": lambda config: None, "config": search_space(job.tune),
                                  "num_samples": job.tune.num_samples}})
    configs = []
    while (trial := alg.next_trial()) is not None:
        configs.append(trial.config)
    return configs


def test_sampling_is_seeded_so_a_job_samples_the_same_trials(write_job):
    space = {"model.arch": {"grid": ["lenet5", "cfl_cnn"]}, "train.lr": {"loguniform": [1.0e-4, 1.0e-2]}}
    job = load_job(tune_job(write_job, {"space": space, "num_samples": 2}))
    first = sampled(job)
    assert len(first) == 4 and sorted(c["model.arch"] for c in first) == ["cfl_cnn", "cfl_cnn", "lenet5", "lenet5"]
    assert len({c["train.lr"] for c in first}) == 4 and all(1e-4 <= c["train.lr"] <= 1e-2 for c in first)
    assert sampled(load_job(tune_job(write_job, {"space": space, "num_samples": 2}))) == first
    reseeded = sampled(load_job(tune_job(write_job, {"space": space, "num_samples": 2, "seed": 7})))
    assert [c["train.lr"] for c in reseeded] != [c["train.lr"] for c in first]


def test_concurrency_leaves_a_cpu_for_data_per_trial_and_says_why(write_job):
    job = load_job(tune_job(write_job))
    plan = plan_concurrency(job, {"CPU": 4}, use_gpu=False)
    assert plan.trials == 2 and "1 for data" in plan.reason  # 4 CPUs / (1 worker + 1 data CPU)
    assert plan_concurrency(job, {"CPU": 64}, use_gpu=False).trials == 3  # no more than the 3 grid trials
    assert plan_concurrency(job, {"CPU": 16, "GPU": 1}, use_gpu=True).trials == 1
    capped = load_job(tune_job(write_job, {"space": SPACE, "max_concurrent_trials": 1}))
    assert plan_concurrency(capped, {"CPU": 16}, use_gpu=False).reason == "tune.max_concurrent_trials = 1"
    two = load_job(tune_job(write_job, **{"scaling.num_workers": 2}))
    assert plan_concurrency(two, {"CPU": 4}, use_gpu=False).trials == 1
    with pytest.raises(JobError, match="one trial needs 3 CPUs"):
        plan_concurrency(two, {"CPU": 2}, use_gpu=False)


def test_trials_rank_by_their_best_epoch():
    rows = [TrialRow("a", "stopped", {}), TrialRow("b", "done", {}), TrialRow("c", "pending", {})]
    for row, values in zip(rows, ([0.5, 0.4], [0.3, 0.9, 0.8])):
        for epoch, value in enumerate(values, 1):
            row.add({"epoch": epoch, "val/acc": value}, "val/acc", "max")
    assert [r.trial for r in rank_rows(rows, "max")] == ["b", "a", "c"]
    assert (rows[1].best, rows[1].best_epoch, rows[1].last) == (0.9, 2, 0.8)
    ranked = rank_rows(rows, "max")
    written = list(csv.DictReader(io.StringIO(results_csv(ranked, ["train.lr"]))))
    assert [(r["rank"], r["trial"], r["status"], r["epochs"], r["stopped_early"]) for r in written] == [
        ("1", "b", "done", "3", "False"), ("2", "a", "stopped", "2", "True"), ("3", "c", "pending", "0", "False")]
    console = Console(width=200, record=True)
    console.print(trials_table(written, ["train.lr"], "val/acc", 3))
    text = console.export_text()
    assert text.index(" b ") < text.index(" a ") and "stopped (early)" in text and "3/3" in text


def read_csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(open(path)))


def checkpoints(run: Path, trial: str) -> list[str]:
    return sorted(p.name for p in (run / "trials" / trial).glob("checkpoint_*"))


@pytest.mark.slow
def test_interrupted_search_resumes_then_best_job_submits(ray_cluster, write_job, tmp_path, mlflow_server):
    """ASHA stops poor learning rates; Ctrl-C keeps finished trials; --resume runs only the rest. In MLflow, only
    the trials that finished before the Ctrl-C have ended."""
    from cnnjobs.train.runner import submit
    from cnnjobs.tune import search

    # One trial at a time, in grid order: the good learning rate sets ASHA's bar (at epoch 2, when it is clearly
    # above chance) before the others reach it, so whether they are stopped does not depend on which concurrent
    # trial happens to report first. The search is interrupted after two trials, the second one stopped early.
    job_file = tune_job(write_job, {"space": SPACE, "grace_period": 2, "reduction_factor": 2,
                                    "max_concurrent_trials": 1}, **{"train.optimizer": "sgd", "train.momentum": 0.9,
                                                                    "output.mlflow": {"tracking_uri": mlflow_server.uri,
                                                                                      "experiment": "interrupted"}})
    env = cli_env(RAY_ADDRESS=ray_cluster["gcs"], RAY_AUTH_MODE="token")
    search_cli = subprocess.Popen([sys.executable, "-m", "cnnjobs.cli", "tune", str(job_file), "--json"],
                                  cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    runs = tmp_path / "runs" / "digits_lenet"
    finished: list[dict[str, str]] = []
    deadline = time.time() + 300
    while len(finished) < 2 and time.time() < deadline and search_cli.poll() is None:
        time.sleep(0.5)
        for results in runs.glob("*/tune_results.csv"):
            finished = [r for r in read_csv(results) if r["status"] in ("done", "stopped")]
    assert finished, "no trial finished in time" + (search_cli.communicate()[1][-3000:] if search_cli.poll() else "")
    search_cli.send_signal(signal.SIGINT)  # what Ctrl-C does
    out, err = search_cli.communicate(timeout=120)
    assert search_cli.returncode == 130, err[-3000:]
    interrupted = json.loads(out.strip().splitlines()[-1])
    assert interrupted["status"] == "interrupted" and "--resume" in interrupted["resume"]
    run = Path(interrupted["run_dir"])
    before = {r["trial"]: (r["epochs"], checkpoints(run, r["trial"])) for r in read_csv(run / "tune_results.csv")
              if r["status"] in ("done", "stopped")}
    assert before and len(before) < 3
    nested = {one.data.tags["cnnjobs.trial"]: one.info.status for one in mlflow_server.runs("interrupted")
              if "cnnjobs.trial" in one.data.tags}
    assert {trial for trial, status in nested.items() if status == "FINISHED"} == set(before), nested

    job = load_job(job_file)
    result = search(job, resume=str(run))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "succeeded" and summary["run_id"] == interrupted["run_id"]
    assert summary["concurrency"] == summary["most_running"] == 1  # max_concurrent_trials held, in both sessions
    rows = read_csv(run / "tune_results.csv")
    assert len(rows) == 3 and {r["status"] for r in rows} <= {"done", "stopped"}
    for trial, (epochs, saved) in before.items():  # finished trials were not run again
        row = next(r for r in rows if r["trial"] == trial)
        assert row["epochs"] == epochs and checkpoints(run, trial) == saved, trial
    # ASHA stopped the hopeless learning rates after fewer than the 4 epochs; the best ran to the end.
    stopped = [r for r in rows if r["status"] == "stopped"]
    assert stopped and all(int(r["epochs"]) < 4 for r in stopped)
    assert summary["trials_stopped_early"] == len(stopped)
    assert summary["epochs_run"] == sum(int(r["epochs"]) for r in rows)
    best = max(rows, key=lambda r: float(r["best"]))
    assert rows[0] == best and result.rows[0].trial == best["trial"] == summary["best_trial"]["trial"]
    assert summary["best_metric"] == pytest.approx(float(best["best"]))
    assert summary["best_trial"]["values"]["train.lr"] == pytest.approx(float(best["train.lr"]))

    # `show` renders the same ranking; `runs` lists the search.
    shown = cnnjobs("show", str(run), "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout.strip().splitlines()[-1]) == summary
    table = shown.stderr[shown.stderr.index("trials, best first"):]
    assert table.index(best["trial"]) < min(table.index(r["trial"]) for r in rows[1:])
    listed = cnnjobs("runs", "--dir", str(tmp_path / "runs"))
    assert "tune" in listed.stdout and summary["run_id"] in listed.stdout

    # best_job.yaml is the job with the winning values and without `tune:`; it validates, and submitting it
    # trains the winning trial again, epoch for epoch: same best epoch, same validation and test accuracy.
    best_job = load_job(run / "best_job.yaml", [f"output.dir={tmp_path / 'best'}"])
    assert best_job.tune is None and best_job.train.lr == pytest.approx(float(best["train.lr"]))
    assert "tune" not in yaml.safe_load((run / "best_job.yaml").read_text())
    again = submit(best_job).summary
    assert again.status == "succeeded" and best["status"] == "done"
    assert (again.best_epoch, again.best_metric, again.metrics["test"].acc) == (
        int(best["best_epoch"]), float(best["best"]), float(best["test/acc"]))
    assert (run / "best_model.pt").exists()
