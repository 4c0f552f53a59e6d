"""The local Ray instances cnnjobs starts on a user's machine: the embedded one (`cnnjobs submit` with no
address) and the warm one (`cnnjobs up` ... `cnnjobs down`). Every service of either listens on 127.0.0.1 only:
a laptop on a shared network exposes no Ray port by training a job.

These tests start their own instances, so they run first, before the session's Ray instance (see conftest).
"""

from __future__ import annotations

import csv
import ipaddress
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from tests.cli.test_cli import cnnjobs
from tests.conftest import REPO, cli_env

pytestmark = pytest.mark.slow


def _loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    return address.is_loopback or bool(getattr(address, "ipv4_mapped", None) and address.ipv4_mapped.is_loopback)


def _listening(pids: set[int]) -> set[tuple[str, str, int]]:
    """(process name, address, port) of the listening TCP sockets of `pids`."""
    found = set()
    for pid in pids:
        try:
            process = psutil.Process(pid)
            found |= {(process.name(), c.laddr.ip, c.laddr.port) for c in process.net_connections(kind="inet")
                      if c.status == psutil.CONN_LISTEN}
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found


def _last_json(done: subprocess.CompletedProcess) -> dict:
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_embedded_instance_listens_on_loopback_only_and_the_run_lists_and_shows(write_job, tmp_path):
    """No RAY_ADDRESS: the CLI starts its own local Ray, trains, and prints the summary as JSON last; meanwhile
    the socket table of every process it started shows listeners on 127.0.0.1 only."""
    job = write_job({"train.epochs": 2, "train.batch_size": 64})
    command = [sys.executable, "-m", "cnnjobs.cli", "submit", str(job), "--json"]
    found: set[tuple[str, str, int]] = set()
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                          env=cli_env()) as cli:
        root = psutil.Process(cli.pid)
        while cli.poll() is None:  # Ray's processes are the CLI's children (gcs_server, raylet) and theirs
            try:
                found |= _listening({p.pid for p in root.children(recursive=True)})
            except psutil.NoSuchProcess:
                pass
            time.sleep(0.3)
        stdout, stderr = cli.communicate()
    assert cli.returncode == 0, stderr[-3000:]
    names = {name for name, _, _ in found}
    assert {"gcs_server", "raylet"} <= names, found
    assert sorted(entry for entry in found if not _loopback(entry[1])) == []

    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["status"] == "succeeded" and summary["ray"].startswith("a local Ray instance started for this run")
    rows = list(csv.DictReader((Path(summary["run_dir"]) / "metrics.csv").read_text().splitlines()))
    best = rows[summary["best_epoch"] - 1]
    assert summary["metrics"]["val"]["acc"] == pytest.approx(float(best["val/acc"]))
    assert summary["metrics"]["test"]["acc"] == pytest.approx(float(rows[-1]["test/acc"]))
    assert json.loads((Path(summary["run_dir"]) / "summary.json").read_text()) == summary
    assert "Started a local Ray instance" not in stdout + stderr, "Ray's log lines go to the run's logs"

    env = cli_env()
    runs_dir = str(tmp_path / "runs")
    listed = cnnjobs("runs", "--dir", runs_dir, "--job", "digits_lenet", "--status", "succeeded", env=env)
    assert listed.returncode == 0 and summary["run_id"] in listed.stdout and "succeeded" in listed.stdout
    assert _last_json(cnnjobs("runs", "--dir", runs_dir, "--status", "failed", "--json", env=env)) == {"runs": []}
    shown = cnnjobs("show", summary["run_id"], "--dir", runs_dir, "--json", env=env)
    assert _last_json(shown) == summary
    assert "test confusion" in shown.stderr


@pytest.fixture
def warm_env(tmp_path):
    """The environment of a user with their own warm-instance record and temporary folder (so that the test
    neither sees nor stops an instance of the person running it)."""
    short = tempfile.mkdtemp(prefix="cj", dir="/tmp")  # Ray's socket paths must stay short
    env = cli_env(XDG_CACHE_HOME=str(tmp_path / "cache"), TMPDIR=short)
    yield env
    cnnjobs("down", env=env)
    shutil.rmtree(short, ignore_errors=True)


def test_a_warm_instance_serves_plan_and_submit_until_down(warm_env, write_job):
    before = _ray_processes()
    up = _last_json(cnnjobs("up", "--json", env=warm_env))
    assert up["started"] is True and up["address"].startswith("127.0.0.1:")
    assert _last_json(cnnjobs("up", "--json", env=warm_env))["started"] is False  # one instance, reused
    from cnnjobs.leftovers import orphans

    assert orphans() == [], "the warm instance (its starter, `ray start`, is gone) is not a dead driver's"
    temp_dir = warm_env["TMPDIR"]
    ray_pids = {p.pid for p in psutil.process_iter(["cmdline"]) if temp_dir in " ".join(p.info["cmdline"] or [])}
    found = _listening(ray_pids)
    assert {"gcs_server", "raylet"} <= {name for name, _, _ in found}, found
    assert sorted(entry for entry in found if not _loopback(entry[1])) == []

    job = write_job({"train.epochs": 3})
    plan = _last_json(cnnjobs("plan", str(job), "--json", env=warm_env))
    assert plan["target"].startswith(f"the warm local instance at {up['address']}")
    assert plan["rows"] == {"train": 1259, "val": 269, "test": 269}
    assert plan["steps_per_epoch"] == 40 and plan["epochs"] == 3  # 1,259 images in batches of 32
    assert 0 < plan["step_s"] < plan["epoch_s"] < plan["eta_s"] and plan["start_s"] > 0
    assert plan["eta_s"] == pytest.approx(plan["start_s"] + 3 * plan["epoch_s"] + plan["end_s"], abs=0.2)
    assert 0 <= plan["wait_share"] <= 1 and plan["verdict"] and plan["peak_rss_mb"] > 50
    assert plan["gpu_mb"] is None and plan["search"] is None

    summary = _last_json(cnnjobs("submit", str(job), "--json", env=warm_env))
    assert summary["status"] == "succeeded" and summary["ray"] == f"the warm local instance at {up['address']} " \
        "(cnnjobs up)"
    assert ray_pids <= {p.pid for p in psutil.process_iter()}, "the instance outlives the submit"

    done = cnnjobs("down", env=warm_env)
    assert done.returncode == 0 and "stopped the local Ray instance" in done.stdout
    assert not ray_pids & {p.pid for p in psutil.process_iter(["status"]) if p.info["status"] != psutil.STATUS_ZOMBIE}
    # <=: an earlier test's instance may still have been exiting when `before` was taken
    assert _ray_processes() <= before, "down leaves none of the instance's processes (agents, client server)"
    assert "no local Ray instance" in cnnjobs("down", env=warm_env).stdout


def _names(processes: list[psutil.Process]) -> set[str]:
    """The names of those of `processes` still running."""
    names = set()
    for process in processes:
        try:
            names.add(process.name())
        except psutil.NoSuchProcess:
            continue
    return names


def _ray_processes() -> set[int]:
    from cnnjobs.leftovers import _ray_processes

    return {process.pid for process in _ray_processes()}


def test_a_killed_drivers_instance_does_not_outlive_the_next_command(write_job, tmp_path):
    """`kill -9` of a driver that started its own instance leaves Ray's dashboard and runtime-env agents running
    (Ray 2.60), listening on 127.0.0.1; the next command that starts an instance stops them first, and the resumed
    run leaves nothing behind either."""
    from cnnjobs.leftovers import orphans

    before = _ray_processes()
    job = write_job({"train.epochs": 4, "train.checkpoint_every": 1, "scaling.in_process": True})
    killed = subprocess.run([sys.executable, "-m", "tests.crash", "ahead:3", "--", "submit", str(job)], cwd=REPO,
                            env=cli_env(), capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr[-3000:]
    agents = {"ray::DashboardAgent", "ray::RuntimeEnvAgent"}
    deadline = time.time() + 30  # what dies with the driver dies within seconds (its workers notice the raylet gone)
    left = orphans()
    while not _names(left) <= agents and time.time() < deadline:
        time.sleep(0.5)
        left = orphans()
    assert left and _names(left) <= agents, [(p.pid, _names([p])) for p in left]
    (run,) = (tmp_path / "runs" / "digits_lenet").iterdir()
    resumed = cnnjobs("submit", "--resume", str(run), "--json", env=cli_env())
    assert _last_json(resumed)["status"] == "succeeded"
    assert not any(p.is_running() for p in left), "the killed run's agents were stopped"
    deadline = time.time() + 30  # the resumed run's own instance stops once it has ended
    while not _ray_processes() <= before and time.time() < deadline:
        time.sleep(0.5)
    assert _ray_processes() <= before and orphans() == []
