"""On a real two-node Ray cluster (loopback): a 2-worker job on both nodes through the Jobs API, jobs/status/logs/
stop, token authentication, node-local storage refused, a killed worker survived and a driver interrupted by
Ctrl-C resumed, both ending with the metrics of an uninterrupted run."""

from __future__ import annotations

import csv
import ipaddress
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from cnnjobs.data.synth import synth
from tests.conftest import REPO, shift_seeds

pytestmark = pytest.mark.slow
EPOCHS = 12  # long enough that a Ctrl-C sent after epoch 3 lands before the end on a fast machine


def cnnjobs(*args: str, env: dict, cwd: Path = REPO, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cnnjobs.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=timeout)


def last_json(done: subprocess.CompletedProcess) -> dict:
    return json.loads(done.stdout.strip().splitlines()[-1])


def rows(run_dir: str | Path) -> list[dict[str, str]]:
    path = Path(run_dir) / "metrics.csv"
    return list(csv.DictReader(open(path))) if path.exists() else []


def digits_job(folder: Path, shared: Path, **changes) -> Path:
    """The quickstart job, short, writing runs and shards to `shared`; saved as `folder/job.yaml`."""
    job = shift_seeds(yaml.safe_load((REPO / "jobs/digits_lenet.yaml").read_text()))
    job["data"]["cache_dir"] = str(shared / "cache")
    job["output"] = {"dir": str(shared / "runs")}
    job["train"].update(epochs=EPOCHS, checkpoint_every=1)
    job["scaling"].update(use_gpu=False)
    for key, value in changes.items():
        section, name = key.split("__")
        job.setdefault(section, {})[name] = value
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    return path


def loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    return address.is_loopback or bool(getattr(address, "ipv4_mapped", None) and address.ipv4_mapped.is_loopback)


def listeners(session_name: str) -> list[tuple[str, str, int]]:
    """(process, address, port) of every listening socket of the Ray processes of one session."""
    pids = {p.pid: p.name() for p in psutil.process_iter(["cmdline"])
            if session_name in " ".join(p.info["cmdline"] or [])}
    return [(pids[c.pid], c.laddr.ip, c.laddr.port) for c in psutil.net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN and c.pid in pids]


@pytest.fixture(scope="module")
def uninterrupted(loopback_cluster, tmp_path_factory):
    """The reference: the job run once on the cluster without any interruption, its loop in the driver (no worker
    process to start). The killed-worker run trains in a worker process: ending equal also shows that both modes
    train the same."""
    shared = tmp_path_factory.mktemp("shared")
    job = digits_job(tmp_path_factory.mktemp("reference"), shared, scaling__in_process=True)
    done = cnnjobs("submit", str(job), "--json", env=loopback_cluster.env(RAY_ADDRESS=loopback_cluster.gcs))
    assert done.returncode == 0, done.stderr[-3000:]
    return last_json(done), shared


def test_every_service_of_the_cluster_listens_on_loopback(loopback_cluster):
    found = listeners(Path(loopback_cluster.session).name)
    assert {"gcs_server", "raylet"} <= {name for name, _, _ in found} and len(found) >= 8, found
    assert [entry for entry in found if not loopback(entry[1])] == []


def test_a_two_worker_job_on_a_bucket_through_the_jobs_api_survives_a_killed_worker(loopback_cluster, s3_server,
                                                                                    tmp_path):
    """The cluster case of the README: runs and shards in a bucket, one worker on each node, the job sent through
    the Jobs API; one worker process dies mid-run (a preempted node, the OOM killer) and the run goes on from its
    last checkpoint in the bucket, every epoch once."""
    s3 = s3_server
    project = tmp_path / "project"  # uploaded as the job's working_dir
    job = digits_job(project, tmp_path / "shared", scaling__num_workers=2, scaling__placement="strict_spread",
                     train__max_failures=1)
    raw = yaml.safe_load(job.read_text())
    raw["output"]["dir"], raw["data"]["cache_dir"] = s3.uri("cluster", "runs"), s3.uri("cluster", "cache")
    job.write_text(yaml.safe_dump(raw, sort_keys=False))
    client = subprocess.Popen([sys.executable, "-m", "cnnjobs.cli", "submit", "job.yaml", "--address",
                               loopback_cluster.dashboard, "--json"], cwd=project, env=loopback_cluster.env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not any(key.endswith("checkpoint_epoch-0002/meta.json") for key in s3.keys("cluster/runs/")):
        assert client.poll() is None, client.communicate()[1][-3000:]
        assert time.time() < deadline, "no second checkpoint in the bucket"
        time.sleep(0.2)
    workers = [p for p in psutil.process_iter(["cmdline"]) if "RayTrainWorker" in " ".join(p.info["cmdline"] or [])]
    assert len(workers) == 2, [w.info["cmdline"] for w in workers]
    workers[1].send_signal(signal.SIGKILL)
    out, err = client.communicate(timeout=600)
    assert client.returncode == 0, out[-2000:] + err[-3000:]
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["status"] == "succeeded" and summary["epochs_run"] == EPOCHS
    assert summary["run_dir"].startswith(s3.uri("cluster", "runs"))
    assert len(summary["workers"]) == 2 and len(set(summary["workers"])) == 2, "one worker on each node"
    assert summary["in_process"] is False
    # (a checkpoint being uploaded when the worker died is incomplete, and the restart says it passed over it)
    assert len(summary["restarts"]) == 1 and summary["restarts"][0]["reason"].startswith("worker failure")
    listed = cnnjobs("runs", "--dir", s3.uri("cluster", "runs"), "--json", env=loopback_cluster.env())
    assert [run["run_id"] for run in last_json(listed)["runs"]] == [summary["run_id"]]
    shown = cnnjobs("show", summary["run_dir"], "--json", env=loopback_cluster.env())
    assert shown.returncode == 0 and last_json(shown)["run_id"] == summary["run_id"]
    key = f"{summary['run_dir'].removeprefix(f's3://{s3.bucket}/')}/metrics.csv"
    rows = s3.client().get_object(Bucket=s3.bucket, Key=key)["Body"].read().decode().splitlines()[1:]
    assert [int(row.split(",")[0]) for row in rows] == list(range(1, EPOCHS + 1))


def test_shards_are_written_where_the_images_are_visible(loopback_cluster, tmp_path):
    """A source only the head's node sees (the second node has its own, empty, folder there) and large enough to be
    written by Ray tasks: every image is read, none skipped as "not found", as the images are read only on a node
    that sees them."""
    source = synth("folder", loopback_cluster.hidden / "source", n=5010)
    job = digits_job(tmp_path / "p", tmp_path / "shared", data__image_size=[16, 16])
    raw = yaml.safe_load(job.read_text())
    raw["data"].update(source={"type": "image_folder", "path": str(source)}, channels=3)
    raw["model"] = {"arch": "cfl_cnn"}
    job.write_text(yaml.safe_dump(raw, sort_keys=False))
    done = cnnjobs("data", "prepare", str(job), "--json", env=loopback_cluster.env(RAY_ADDRESS=loopback_cluster.gcs))
    assert done.returncode == 0, done.stderr[-3000:]
    prepared = last_json(done)
    assert prepared["skipped"] == 0 and sum(prepared["rows"].values()) == sum(1 for p in source.rglob("*.png"))


def test_jobs_status_logs_stop_and_the_token(loopback_cluster, tmp_path):
    project = tmp_path / "project"
    digits_job(project, tmp_path / "shared", train__epochs=200)
    env = loopback_cluster.env()
    address = ["--address", loopback_cluster.dashboard]
    submitted = cnnjobs("submit", "job.yaml", *address, "--no-wait", "--json", env=env, cwd=project)
    assert submitted.returncode == 0, submitted.stderr[-3000:]
    job_id = last_json(submitted)["submission_id"]
    listed = last_json(cnnjobs("jobs", *address, "--json", env=env))
    assert job_id in [job["submission_id"] for job in listed["jobs"]]
    assert next(job for job in listed["jobs"] if job["submission_id"] == job_id)["job"] == "digits_lenet"
    deadline = time.time() + 180
    while last_json(cnnjobs("status", job_id, *address, "--json", env=env))["status"] != "RUNNING":
        assert time.time() < deadline, "the job never started"
        time.sleep(1)
    while "epoch" not in cnnjobs("logs", job_id, *address, env=env).stdout:
        assert time.time() < deadline, "no epoch in the log"
        time.sleep(2)
    stopped = cnnjobs("stop", job_id, *address, "--json", env=env)
    assert stopped.returncode == 0 and last_json(stopped)["status"] in ("STOPPED", "FAILED")
    followed = cnnjobs("logs", job_id, *address, "--follow", env=env, timeout=120)
    assert followed.returncode == 0, "--follow returns once the job has ended"

    wrong = cnnjobs("jobs", *address, env={**env, "RAY_AUTH_TOKEN": "not-the-token"})
    assert wrong.returncode == 2 and wrong.stderr.strip().splitlines() == [
        f"cnnjobs: error: --address {loopback_cluster.dashboard}: the cluster refused the token; copy the head's "
        "~/.ray/auth_token (or set RAY_AUTH_TOKEN) again"]
    home = tmp_path / "home"  # no ~/.ray/auth_token there, no RAY_AUTH_MODE: nothing to send
    missing = cnnjobs("jobs", *address, env={k: v for k, v in {**env, "HOME": str(home)}.items()
                                              if k != "RAY_AUTH_MODE"})
    assert missing.returncode == 2 and "the cluster requires a token" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1
    unknown = cnnjobs("status", "raysubmit_nope", *address, env=env)
    assert unknown.returncode == 2 and "raysubmit_nope: no such job" in unknown.stderr


def test_node_local_storage_is_refused_before_training(loopback_cluster, tmp_path):
    job = digits_job(tmp_path / "p", loopback_cluster.hidden / "shared")  # the second node cannot see this
    done = cnnjobs("submit", str(job), env=loopback_cluster.env(RAY_ADDRESS=loopback_cluster.gcs))
    assert done.returncode == 2, done.stderr[-2000:]
    message = done.stderr.strip().splitlines()
    assert len(message) == 1 and "output.dir" in message[0] and "is not shared" in message[0]
    assert "s3://" in message[0] and "gs://" in message[0] and "shared mount" in message[0]
    assert not (loopback_cluster.hidden / "shared" / "runs").exists()


def new_run_with(epochs: int, runs: Path, before: set[Path], driver: subprocess.Popen, timeout: float = 240) -> Path:
    """The run folder this driver created, once `epochs` epochs are in its metrics.csv."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert driver.poll() is None, driver.communicate()[1][-3000:]
        found = next((folder for folder in set(runs.glob("*")) - before if len(rows(folder)) >= epochs), None)
        if found is not None:
            return found
        time.sleep(0.05)
    raise AssertionError(f"no new run reached {epochs} epochs")


def assert_same_run(summary: dict, reference: dict) -> None:
    """Every epoch once, and the final metrics of the uninterrupted run, to the last digit."""
    epochs = [int(row["epoch"]) for row in rows(summary["run_dir"])]
    assert epochs == list(range(1, EPOCHS + 1)), epochs
    keys = ["train/loss", "train/acc", "val/loss", "val/acc"]
    assert [{k: r[k] for k in keys} for r in rows(summary["run_dir"])] == \
        [{k: r[k] for k in keys} for r in rows(reference["run_dir"])]
    assert summary["metrics"] == reference["metrics"] and summary["best_epoch"] == reference["best_epoch"]


def test_a_killed_worker_is_survived(loopback_cluster, uninterrupted, tmp_path):
    reference, shared = uninterrupted
    job = digits_job(tmp_path / "p", shared, scaling__in_process=False, train__max_failures=1)
    runs = shared / "runs" / "digits_lenet"
    before = set(runs.glob("*"))
    driver = subprocess.Popen([sys.executable, "-m", "cnnjobs.cli", "submit", str(job), "--json"], cwd=REPO,
                              env=loopback_cluster.env(RAY_ADDRESS=loopback_cluster.gcs),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    new_run_with(2, runs, before, driver)
    # The only Ray Train worker on the machine: the cluster tests run before any other Ray instance starts.
    workers = [p for p in psutil.process_iter(["cmdline"]) if "RayTrainWorker" in " ".join(p.info["cmdline"] or [])]
    assert len(workers) == 1, [w.info["cmdline"] for w in workers]
    workers[0].send_signal(signal.SIGKILL)  # what the OOM killer or a lost spot node does
    out, err = driver.communicate(timeout=600)
    assert driver.returncode == 0, err[-3000:]
    summary = json.loads(out.strip().splitlines()[-1])
    assert len(summary["restarts"]) == 1 and summary["restarts"][0]["reason"].startswith("worker failure")
    assert_same_run(summary, reference)


def test_ctrl_c_then_resume_ends_like_an_uninterrupted_run(loopback_cluster, uninterrupted, tmp_path):
    reference, shared = uninterrupted
    job = digits_job(tmp_path / "p", shared, scaling__in_process=True)  # the loop in the driver: the laptop case
    env = loopback_cluster.env(RAY_ADDRESS=loopback_cluster.gcs)
    runs = shared / "runs" / "digits_lenet"
    before = set(runs.glob("*"))
    driver = subprocess.Popen([sys.executable, "-m", "cnnjobs.cli", "submit", str(job), "--json"], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run = new_run_with(3, runs, before, driver)
    driver.send_signal(signal.SIGINT)  # what Ctrl-C does
    out, err = driver.communicate(timeout=120)
    assert driver.returncode == 130, err[-3000:]
    interrupted = json.loads(out.strip().splitlines()[-1])
    assert interrupted["status"] == "interrupted" and interrupted["resume"] == f"cnnjobs submit --resume {run}"
    assert f"continue with: cnnjobs submit --resume {run}" in " ".join(err.split())
    kept = len(rows(run))
    assert 3 <= kept < EPOCHS

    original = (run / "job.yaml").read_text()
    (run / "job.yaml").write_text(original.replace("lr: 0.05", "lr: 0.01"))  # the job changed since
    changed = cnnjobs("submit", "--resume", str(run), env=env)
    assert changed.returncode == 2 and "train.lr: 0.05 -> 0.01" in changed.stderr and "--force" in changed.stderr
    (run / "job.yaml").write_text(original)

    again = cnnjobs("submit", "--resume", str(run), "--json", env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    summary = last_json(again)
    assert summary["run_id"] == interrupted["run_id"] and summary["restarts"][-1]["reason"] == "resume"
    assert_same_run(summary, reference)

    finished = cnnjobs("submit", "--resume", str(run), env=env)
    assert finished.returncode == 2 and "finished already" in finished.stderr
