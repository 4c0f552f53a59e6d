"""Runs in MLflow, read back through MLflow's own client from a real tracking server (`mlflow server` on 127.0.0.1):
the job as parameters, every epoch once, the test metrics, tags, status and artifacts; a server that goes down
mid-run (the epochs it missed are sent when it answers again); tracking off by default; a missing client."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cnnjobs.cli import main
from cnnjobs.results import tracking
from tests.conftest import REPO, cli_env

EPOCHS = 10


def test_the_job_flattens_into_parameters_and_rows_into_metrics():
    from cnnjobs.spec import load_job

    params = tracking.flat_params(load_job(REPO / "jobs/digits_lenet.yaml").model_dump(mode="json"))
    assert params["train.lr"] == "0.05" and params["model.arch"] == "lenet5" and params["data.image_size"] == "[28, 28]"
    assert params["train.early_stopping"] == "null", "every default filled in, null ones too"
    assert tracking.epoch_metrics({"epoch": 3, "val/acc": "0.5", "test/confusion": {"x": [[1]]}, "stopped_early": True,
                                   "lr": 0.01, "time/wait_s": float("nan")}) == {"val/acc": 0.5, "lr": 0.01}


@pytest.mark.slow
def test_a_tracked_run_and_a_server_that_goes_down_mid_run(ray_cluster, mlflow_server, write_job, tmp_path):
    server = mlflow_server
    job = write_job({"train.epochs": EPOCHS, "scaling.in_process": True, "scaling.use_gpu": False,
                     "output.mlflow": {"experiment": "outage", "tags": {"team": "vision"}}})
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    for args in (["init", "-q"], ["add", job.name], ["commit", "-qm", "the job"]):  # the job sits in a repository
        subprocess.run([*git, *args], check=True)
    commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    driver = subprocess.Popen([sys.executable, "-m", "cnnjobs.cli", "submit", str(job), "--json"], cwd=REPO,
                              env=cli_env(RAY_ADDRESS=ray_cluster["gcs"], MLFLOW_TRACKING_URI=server.uri),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    runs = tmp_path / "runs" / "digits_lenet"
    deadline = time.time() + 300
    while not list(runs.glob("*/metrics.csv")) or len(next(runs.glob("*/metrics.csv")).read_text().splitlines()) < 3:
        assert driver.poll() is None and time.time() < deadline, driver.communicate()
        time.sleep(0.05)
    server.stop()  # two epochs in: the tracking server goes down (for as long as it takes to start again)
    server.start()
    out, err = driver.communicate(timeout=300)
    assert driver.returncode == 0, err[-3000:]
    summary = json.loads(out.strip().splitlines()[-1])
    assert "does not answer" in err and "the run goes on" in err, "one warning when it went down"
    assert summary["mlflow"]["unsent_epochs"] == [] and summary["mlflow"]["experiment"] == "outage"

    (run,) = server.runs("outage")
    assert run.info.run_id == summary["mlflow"]["run_id"] and run.info.status == "FINISHED"
    for key in ("train/loss", "val/acc", "lr", "time/wait_s"):
        assert server.steps(run.info.run_id, key) == list(range(1, EPOCHS + 1)), key  # every epoch, once
    assert run.data.metrics["test/acc"] == pytest.approx(summary["metrics"]["test"]["acc"])
    assert run.data.params["train.epochs"] == str(EPOCHS) and run.data.params["model.arch"] == "lenet5"
    assert run.data.tags["cnnjobs.run_id"] == summary["run_id"] and run.data.tags["team"] == "vision"
    assert run.data.tags["cnnjobs.run_dir"] == summary["run_dir"]
    assert run.data.tags["mlflow.source.git.commit"] == commit
    artifacts = {item.path for item in server.client().list_artifacts(run.info.run_id)}
    assert {"job.yaml", "summary.json", "metrics.csv", "learning_curves.png", "confusion_digit.png"} <= artifacts


@pytest.mark.slow
def test_a_server_down_from_the_start_is_one_warning_and_the_run_goes_on(ray_cluster, write_job, monkeypatch,
                                                                         capsys):
    monkeypatch.setattr(tracking, "FLUSH_S", 1.0)
    job = write_job({"train.epochs": 2, "scaling.in_process": True, "scaling.use_gpu": False,
                     "output.mlflow": {"tracking_uri": "http://127.0.0.1:9"}})
    assert main(["submit", str(job), "--json"]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert summary["status"] == "succeeded" and summary["mlflow"]["unsent_epochs"] == [1, 2]
    assert summary["mlflow"]["run_id"] is None and summary["mlflow"]["error"]
    assert " ".join(captured.err.split()).count("MLflow at http://127.0.0.1:9 does not answer") == 1


def test_tracking_asked_for_without_the_client_is_one_line_before_ray(write_job, monkeypatch, capsys):
    import cnnjobs.session

    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` fails, as without the extra
    monkeypatch.setattr(cnnjobs.session, "ray_session", lambda *a, **k: pytest.fail("Ray was started"))
    job = write_job({"train.epochs": 1})
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    assert main(["submit", str(job)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [f"cnnjobs: error: {job}: MLFLOW_TRACKING_URI: tracking in MLflow is asked for but its client is "
                     'not installed; pip install "cnnjobs[mlflow]"']
    assert not (Path(job).parent / "runs").exists()


def test_off_by_default_without_importing_mlflow():
    done = subprocess.run([sys.executable, "-c", (
        "import sys; from cnnjobs.spec import load_job; from cnnjobs.results import tracking; "
        "import cnnjobs.train.runner; "
        f"job = load_job({str(REPO / 'jobs/digits_lenet.yaml')!r}); "
        "print(tracking.enabled(job), 'mlflow' in sys.modules)")], capture_output=True, text=True,
        env={k: v for k, v in cli_env().items() if k != "MLFLOW_TRACKING_URI"}, timeout=120)
    assert done.stdout.split() == ["False", "False"], done.stderr[-2000:]
