"""Every command on a bucket of a real S3 server (moto's server mode, spoken to over the S3 protocol), as a user on
a cluster runs them: `output.dir` and `data.cache_dir` on s3://; what a bucket that cannot be used says; a storage
that stops answering mid-run, then `--resume`."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from cnnjobs.cli import main
from tests.conftest import REPO, cli_env, job_overrides

pytestmark = pytest.mark.slow


def last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def digits_pngs(folder: Path, count: int = 6) -> Path:
    digits = load_digits()
    folder.mkdir(parents=True)
    for i in range(count):
        Image.fromarray((digits.images[i] * 15.9).astype(np.uint8)).save(folder / f"{i}.png")
    return folder


def bucket_job(s3, runs: str, *changes: str) -> list[str]:
    """`--set` arguments of the quickstart job with its runs and shards in the bucket."""
    return [item for change in job_overrides("jobs/digits_lenet.yaml", f"output.dir={s3.uri(runs)}",
                                             f"data.cache_dir={s3.uri('cache')}", *changes)
            for item in ("--set", change)]


def test_every_command_on_a_bucket(ray_cluster, s3_server, tmp_path, capsys):
    s3 = s3_server
    job = str(REPO / "jobs/digits_lenet.yaml")
    assert main(["submit", job, *bucket_job(s3, "every", "train.epochs=3", "scaling.in_process=true"), "--json"]) == 0
    first = last_json(capsys)
    assert first["status"] == "succeeded" and first["in_process"] and first["run_dir"].startswith("s3://")
    prefix = first["run_dir"].removeprefix(f"s3://{s3.bucket}/") + "/"
    keys = {key.removeprefix(prefix) for key in s3.keys(prefix)}
    assert {"job.yaml", "metrics.csv", "summary.json", "best_model.pt", "learning_curves.png", "logs/ray.log",
            "checkpoint_epoch-0003/meta.json", "checkpoint_epoch-0003/model.pt",
            "tensorboard/events.out.tfevents.cnnjobs"} <= keys, sorted(keys)
    assert not any(".partial" in key or ".tmp" in key for key in keys)

    # Two workers in worker processes: Ray Train uploads their checkpoints through cnnjobs (meta.json last).
    assert main(["submit", job, *bucket_job(s3, "every", "train.epochs=2", "scaling.num_workers=2"), "--json"]) == 0
    second = last_json(capsys)
    assert second["status"] == "succeeded" and not second["in_process"] and len(second["workers"]) == 2
    assert f"{second['run_dir'].removeprefix(f's3://{s3.bucket}/')}/checkpoint_epoch-0002/meta.json" in s3.keys()

    root = s3.uri("every")
    assert main(["runs", "--dir", root, "--json"]) == 0
    assert sorted(run["run_id"] for run in last_json(capsys)["runs"]) == sorted([first["run_id"], second["run_id"]])
    assert main(["show", first["run_id"], "--dir", root, "--json"]) == 0
    assert last_json(capsys)["metrics"] == first["metrics"]
    assert main(["compare", first["run_dir"], second["run_dir"], "--out", str(tmp_path / "cmp.png"), "--json"]) == 0
    assert (tmp_path / "cmp.png").stat().st_size > 0
    capsys.readouterr()

    images = digits_pngs(tmp_path / "new")
    assert main(["predict", first["run_dir"], str(images), "--local", "--json"]) == 0
    local = last_json(capsys)
    assert main(["predict", first["run_dir"], str(images), "--ray", "--json"]) == 0
    on_ray = last_json(capsys)
    assert len(on_ray["predictions"]) == len(local["predictions"]) == 6
    for ray_side, here in zip(on_ray["predictions"], local["predictions"]):  # the same model, other processes
        assert [c["class"] for c in ray_side["top"]["digit"]] == [c["class"] for c in here["top"]["digit"]]
        assert [c["probability"] for c in ray_side["top"]["digit"]] == pytest.approx(
            [c["probability"] for c in here["top"]["digit"]], abs=1e-5)
    assert any(key.startswith(f"{prefix}logs/predict/") for key in s3.keys(prefix)), "Ray's log lines kept"
    assert main(["export", first["run_id"], "--dir", root, "--format", "torchscript", "--json"]) == 0
    assert last_json(capsys)["model"] == f"{first['run_dir']}/export/model.pt"
    assert main(["visualize", first["run_dir"], str(images / "0.png"), "--json"]) == 0
    capsys.readouterr()
    assert f"{prefix}visualize/0/prediction.png" in s3.keys(prefix)

    shards = bucket_job(s3, "every")
    assert main(["data", "prepare", job, *shards, "--json"]) == 0
    prepared = last_json(capsys)
    assert prepared["cached"] and prepared["shards"] == first["data"]["shards"]
    assert main(["data", "inspect", job, *shards, "--out", str(tmp_path / "grid.png"), "--json"]) == 0
    assert sum(last_json(capsys)["counts"]["train"]["digit"]) == first["data"]["rows"]["train"]
    assert main(["plan", job, *shards, "--steps", "5", "--json"]) == 0
    assert last_json(capsys)["steps_per_epoch"] > 0


def test_a_bucket_that_cannot_be_used_is_one_line_before_anything_is_written(s3_server, tmp_path, monkeypatch,
                                                                              capsys):
    job = str(REPO / "jobs/digits_lenet.yaml")
    endpoint = s3_server.endpoint
    monkeypatch.chdir(tmp_path)
    for env, change, expected in [
            ({}, "output.dir=s3://no-such-bucket/runs", f"output.dir: s3://no-such-bucket/runs: no bucket "
                                                         f"'no-such-bucket' at {endpoint}; create it first"),
            ({"AWS_SECRET_ACCESS_KEY": "wrong"}, f"output.dir={s3_server.uri('refused')}",
             "the storage refused the credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"),
            ({"AWS_ENDPOINT_URL": "http://127.0.0.1:9"}, f"data.cache_dir={s3_server.uri('down')}",
             f"data.cache_dir: {s3_server.uri('down')}: cannot reach http://127.0.0.1:9 ("),
            ({}, "output.dir=nosuch://bucket/runs", "output.dir: nosuch://bucket/runs: not a storage location")]:
        with monkeypatch.context() as patched:
            for name, value in env.items():
                patched.setenv(name, value)
            assert main(["submit", job, "--set", change]) == 2, change
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], (change, lines)
        assert lines[0].startswith(f"cnnjobs: error: {job}: ")
    assert not (tmp_path / "runs").exists()
    assert [key for key in s3_server.keys() if key.startswith(("refused/", "down/"))] == []


def test_a_storage_that_stops_answering_then_resume(ray_cluster, s3_server, tmp_path):
    """A short hiccup is ridden out; an outage longer than the retries stops the run with one line and keeps every
    epoch written so far; `--resume` continues once the storage is back, every epoch once."""
    s3 = s3_server
    epochs = 40
    args = [sys.executable, "-m", "cnnjobs.cli", "submit", str(REPO / "jobs/digits_lenet.yaml"),
            *bucket_job(s3, "outage", f"train.epochs={epochs}", "scaling.in_process=true"),
            "--set", f"data.cache_dir={tmp_path / 'cache'}"]
    env = cli_env(RAY_ADDRESS=ray_cluster["gcs"], CNNJOBS_STORAGE_RETRY_S="3")
    driver = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def recorded() -> int:
        found = [key for key in s3.keys("outage/") if key.endswith("/metrics.csv")]
        return len(s3.client().get_object(Bucket=s3.bucket, Key=found[0])["Body"].read().splitlines()) - 1 \
            if found else 0

    def wait_for(rows: int) -> None:
        deadline = time.time() + 240
        while recorded() < rows:
            assert driver.poll() is None, driver.communicate()
            assert time.time() < deadline
            time.sleep(0.1)

    try:
        wait_for(2)
        assert [key for key in s3.keys("outage/") if key.endswith("/logs/ray.log")], "logs uploaded as the run goes"
        s3.stop()
        time.sleep(1.5)  # a hiccup: shorter than the retries
        s3.start()
        wait_for(recorded() + 2)
        s3.stop()  # an outage: longer than the retries
        out, err = driver.communicate(timeout=240)
    finally:
        if driver.poll() is None:
            driver.kill()
        s3.start()
    assert driver.returncode == 1, err[-3000:]
    message = " ".join((out + err).split())
    (run_dir,) = {line.split("continue with cnnjobs submit --resume ")[1].split()[0]
                  for line in [message] if "continue with cnnjobs submit --resume " in line}
    assert f"train failed: {run_dir}" in message and ": cannot " in message, message[-2000:]
    assert "the last good checkpoint is kept" in message and "once the storage answers again" in message
    kept = recorded()
    assert 4 <= kept < epochs

    done = subprocess.run([sys.executable, "-m", "cnnjobs.cli", "submit", "--resume", run_dir, "--json"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["status"] == "succeeded" and summary["epochs_run"] == epochs
    key = f"{run_dir.removeprefix(f's3://{s3.bucket}/')}/metrics.csv"
    rows = s3.client().get_object(Bucket=s3.bucket, Key=key)["Body"].read().decode().splitlines()[1:]
    assert [int(row.split(",")[0]) for row in rows] == list(range(1, epochs + 1))
