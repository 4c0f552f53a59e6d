"""The command line as users and scripts see it: exit codes, one-line errors, --json, runs and show."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, cli_env


def cnnjobs(*args: str, env: dict | None = None, timeout: int = 600, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cnnjobs.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env=env or cli_env(), timeout=timeout)


def test_bad_job_file_is_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((REPO / "jobs/digits_lenet.yaml").read_text().replace("lr: 0.05", "lr: -1"))
    done = cnnjobs("submit", str(bad))
    assert done.returncode == 2
    line = next(n for n, text in enumerate(bad.read_text().splitlines(), 1) if "lr: -1" in text)
    assert done.stderr.strip().splitlines() == [f"cnnjobs: error: {bad}:{line}: train.lr: must be > 0 (got -1)"]
    assert "Traceback" not in done.stderr + done.stdout
    assert not (tmp_path / "runs").exists()


def test_bad_arguments_and_unknown_runs_exit_2(tmp_path):
    for args in (["submit"], ["submit", "jobs/digits_lenet.yaml", "--set", "train.lr"],
                 ["show", "nope", "--dir", str(tmp_path)], ["submit", str(tmp_path / "missing.yaml")]):
        done = cnnjobs(*args)
        assert done.returncode == 2, args
        assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr, args


@pytest.mark.slow
def test_submit_on_the_embedded_default_then_runs_and_show(write_job, tmp_path):
    """No RAY_ADDRESS: the CLI starts its own local Ray, trains, and prints the summary as JSON last."""
    job = write_job({"train.epochs": 2})
    done = cnnjobs("submit", str(job), "--json", "--set", "train.batch_size=64")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["status"] == "succeeded"
    rows = list(csv.DictReader(open(Path(summary["run_dir"]) / "metrics.csv")))
    best = rows[summary["best_epoch"] - 1]
    assert summary["metrics"]["val"]["acc"] == pytest.approx(float(best["val/acc"]))
    assert summary["metrics"]["test"]["acc"] == pytest.approx(float(rows[-1]["test/acc"]))
    assert json.loads((Path(summary["run_dir"]) / "summary.json").read_text()) == summary
    assert "Started a local Ray instance" not in done.stdout + done.stderr, "Ray's log lines go to the run's logs"

    runs_dir = str(tmp_path / "runs")
    listed = cnnjobs("runs", "--dir", runs_dir)
    assert listed.returncode == 0 and summary["run_id"] in listed.stdout and "succeeded" in listed.stdout
    shown = cnnjobs("show", summary["run_id"], "--dir", runs_dir, "--json")
    assert shown.returncode == 0
    assert json.loads(shown.stdout.strip().splitlines()[-1]) == summary
    assert "test confusion" in shown.stderr
