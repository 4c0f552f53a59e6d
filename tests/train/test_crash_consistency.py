"""A driver killed with SIGKILL at any moment of a run, then `--resume`: the run ends as an uninterrupted one, every
epoch in metrics.csv once, in order, with the values it had when trained (`tests/crash.py` kills the driver at
the exact moment). A search's driver killed the same way, then `tune --resume RUN`: every trial finished or
stopped by ASHA, none pending."""

from __future__ import annotations

import csv
import io
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, cli_env, shift_seeds

pytestmark = pytest.mark.slow
EPOCHS = 4
KEYS = ["epoch", "train/loss", "train/acc", "val/loss", "val/acc", "best_epoch"]


def job_file(folder: Path, cache: str, **train) -> Path:
    job = shift_seeds(yaml.safe_load((REPO / "jobs/digits_lenet.yaml").read_text()))
    job["data"]["cache_dir"] = cache
    job["output"] = {"dir": str(folder / "runs")}
    job["train"].update(epochs=EPOCHS, checkpoint_every=1, **train)
    job["scaling"].update(use_gpu=False, in_process=True)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "job.yaml").write_text(yaml.safe_dump(job, sort_keys=False))
    return folder / "job.yaml"


def run(*args: str, env: dict, crash: str | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", *(("tests.crash", crash, "--") if crash else ("cnnjobs.cli",)), *args]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def epochs(run_dir: Path) -> list[dict[str, str]]:
    return [{key: row.get(key) for key in KEYS} for row in csv.DictReader(open(run_dir / "metrics.csv"))]


@pytest.fixture(scope="module")
def reference(ray_cluster, cache_dir, tmp_path_factory):
    """The job run once without interruption (the loop in the driver), and the environment of the runs."""
    env = cli_env(RAY_ADDRESS=ray_cluster["gcs"])
    folder = tmp_path_factory.mktemp("reference")
    done = run("submit", str(job_file(folder, cache_dir)), "--json", env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    return summary, epochs(Path(summary["run_dir"])), env


@pytest.mark.parametrize("point, in_process, tracked", [("start", True, False), ("ahead:3", True, True),
                                                        ("ahead:3", False, False), ("evaluation", True, False),
                                                        ("pictures", True, False)])
def test_a_killed_driver_then_resume_ends_like_an_uninterrupted_run(reference, cache_dir, tmp_path, point,
                                                                      in_process, tracked, request):
    summary, rows, env = reference
    job = job_file(tmp_path, cache_dir)
    raw = yaml.safe_load(job.read_text())
    raw["scaling"]["in_process"] = in_process  # False: the loop in a worker process, which uploads the checkpoint
    if tracked:  # and in MLflow: the resumed run continues the same MLflow run, no epoch sent twice
        server = request.getfixturevalue("mlflow_server")
        raw["output"]["mlflow"] = {"tracking_uri": server.uri, "experiment": "killed"}
    job.write_text(yaml.safe_dump(raw, sort_keys=False))
    killed = run("submit", str(job), env=env, crash=point)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    (run_dir,) = (tmp_path / "runs" / "digits_lenet").iterdir()
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "running"
    before = [row["epoch"] for row in epochs(run_dir)] if (run_dir / "metrics.csv").exists() else []
    if point.startswith("ahead"):  # the race: a checkpoint newer than the last recorded epoch
        assert before == ["1", "2"] and (run_dir / "checkpoint_epoch-0003" / "meta.json").exists()

    resumed = run("submit", "--resume", str(run_dir), "--json", env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    final = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert epochs(run_dir) == rows, "every epoch once, in order, with the values of the uninterrupted run"
    assert final["status"] == "succeeded" and final["epochs_run"] == EPOCHS
    assert final["metrics"] == summary["metrics"] and final["best_epoch"] == summary["best_epoch"]
    assert (run_dir / "best_model.pt").exists() and (run_dir / "learning_curves.png").exists()
    if tracked:
        (tracked_run,) = server.runs("killed")
        assert tracked_run.info.run_id == final["mlflow"]["run_id"] and tracked_run.info.status == "FINISHED"
        assert server.steps(tracked_run.info.run_id, "val/acc") == list(range(1, EPOCHS + 1))


def test_a_killed_search_resumes_without_its_job_file_and_leaves_no_trial_pending(ray_cluster, s3_server, cache_dir,
                                                                                  mlflow_server, tmp_path):
    """On the bucket (the search's runs in the S3 server, `tune --resume` from there) and in MLflow (a parent run,
    a nested run per trial)."""
    s3 = s3_server
    job = shift_seeds(yaml.safe_load((REPO / "jobs/arch_search.yaml").read_text()))
    job["data"]["cache_dir"] = cache_dir
    job["output"] = {"dir": s3.uri("searches"), "mlflow": {"tracking_uri": mlflow_server.uri, "experiment": "search"}}
    job["train"]["epochs"] = 2
    job["tune"].update(num_samples=1, space={"model.arch": {"grid": ["lenet5", "cfl_cnn", "bn_cnn"]}},
                       scheduler="none")
    (tmp_path / "search.yaml").write_text(yaml.safe_dump(job, sort_keys=False))
    env = cli_env(RAY_ADDRESS=ray_cluster["gcs"])
    killed = run("tune", str(tmp_path / "search.yaml"), env=env, crash="trial-done")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    (run_dir,) = {key.split("/summary.json")[0] for key in s3.keys("searches/") if key.endswith("/summary.json")}
    location = f"s3://{s3.bucket}/{run_dir}"

    resumed = run("tune", "--resume", location, "--json", env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert summary["status"] == "succeeded" and summary["trials"] == 3
    table = s3.client().get_object(Bucket=s3.bucket, Key=f"{run_dir}/tune_results.csv")["Body"].read().decode()
    trials = list(csv.DictReader(io.StringIO(table)))
    assert sorted(row["model.arch"] for row in trials) == ["bn_cnn", "cfl_cnn", "lenet5"]
    assert [(row["status"], row["epochs"]) for row in trials] == [("done", "2")] * 3, trials
    assert summary["epochs_run"] == 6 and summary["best_trial"]["epochs"] == 2

    runs = mlflow_server.runs("search")
    (parent,) = [one for one in runs if "mlflow.parentRunId" not in one.data.tags]
    assert parent.info.run_id == summary["mlflow"]["run_id"] and parent.info.status == "FINISHED"
    artifacts = {item.path for item in mlflow_server.client().list_artifacts(parent.info.run_id)}
    assert {"tune_results.csv", "best_job.yaml", "summary.json", "job.yaml"} <= artifacts
    nested = [one for one in runs if one.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(one.data.params["model.arch"] for one in nested) == ["bn_cnn", "cfl_cnn", "lenet5"]
    assert {one.data.tags["cnnjobs.trial"] for one in nested} == {row["trial"] for row in trials}
    for one in nested:
        assert one.info.status == "FINISHED" and one.data.tags["cnnjobs.stopped_early"] == "false"
        assert mlflow_server.steps(one.info.run_id, "val/acc") == [1, 2], "each epoch once, across the kill"
