"""Shared fixtures: one Ray instance for the whole session, job files written into tmp folders.

`CNNJOBS_TEST_SEED=N` shifts every seed the tests train with (`train.seed`, `data.seed`, `tune.seed` and the
synthetic stand-ins' seed) by N, so that a learning test can be tried on other draws than the default one.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
TEST_SEED = int(os.environ.get("CNNJOBS_TEST_SEED", "0"))


def shift_seeds(job: dict) -> dict:
    """The job dict with its train, data (and tune) seeds shifted by CNNJOBS_TEST_SEED."""
    for section in ("train", "data"):
        node = job.setdefault(section, {})
        node["seed"] = int(node.get("seed", 0)) + TEST_SEED
    if job.get("tune"):
        job["tune"]["seed"] = int(job["tune"].get("seed") or job["train"]["seed"]) + TEST_SEED
    return job


def job_overrides(path: str | Path, *overrides: str) -> list[str]:
    """`--set` overrides that shift the seeds of the job file `path`, followed by `overrides`."""
    raw = yaml.safe_load((REPO / path).read_text())
    shifted = shift_seeds({"train": dict(raw.get("train") or {}), "data": dict(raw.get("data") or {})})
    return [f"train.seed={shifted['train']['seed']}", f"data.seed={shifted['data']['seed']}", *overrides]


def seeded_job(path: str | Path, *overrides: str):
    """A shipped job loaded as the tests train it: seeds shifted, then `overrides` applied."""
    from cnnjobs.spec import load_job

    return load_job(REPO / path, job_overrides(path, *overrides))


def stand_in(kind: str, out: Path, n: int | None = None) -> Path:
    """A synthetic stand-in dataset drawn with the tests' seed."""
    from cnnjobs.data.synth import synth

    return synth(kind, out, n=n, seed=TEST_SEED)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests that start Ray instances of their own first (the local instances, then the two-node cluster):
    only one Ray instance may run at a time, and the session's is started later by the first test that asks."""
    order = ("tests/local/", "tests/cluster/")
    items.sort(key=lambda item: next((i for i, folder in enumerate(order) if folder in item.nodeid), len(order)))


@pytest.fixture(scope="session")
def s3_server():
    """One S3 server for the session (moto's server mode on 127.0.0.1, authentication on), its credentials and
    endpoint exported as the standard AWS variables: every process started afterwards (the session's Ray instance,
    the two-node cluster, `cnnjobs` subprocesses) reaches the bucket as a user's processes would reach theirs."""
    from tests.s3 import start_server

    server = start_server()
    os.environ.update(server.env)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    """One MLflow tracking server for the session (`mlflow server`, SQLite store, on 127.0.0.1)."""
    from tests.mlflow_server import MlflowServer

    server = MlflowServer(tmp_path_factory.mktemp("mlflow"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def ray_cluster(s3_server) -> dict[str, str]:
    """Start Ray once per test session (starting it costs ~10 s); yields its GCS and dashboard addresses. Started
    after the S3 server, so that its workers have the variables that reach the bucket."""
    import ray

    from cnnjobs.localhost import local_cpus

    # As in an activated virtualenv: Ray Jobs run `cnnjobs ...` entrypoints found on the PATH of this instance.
    os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]

    # 4 logical CPUs on a 2-core machine: two 1-CPU workers plus room for Ray Data's tasks.
    context = ray.init(num_cpus=max(4, local_cpus(2, 1.0)), include_dashboard=True, dashboard_host="127.0.0.1",
                       log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield {"gcs": ray.get_runtime_context().gcs_address, "dashboard": f"http://{context.dashboard_url}"}
    ray.shutdown()


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One shard cache for the session, so jobs on the same data share their shards as users' jobs do."""
    return str(tmp_path_factory.mktemp("cache"))


@pytest.fixture
def write_job(tmp_path: Path, cache_dir: str):
    """Write a job YAML (the quickstart's, with changes) into tmp and return its path."""

    def write(changes: dict | None = None, name: str = "job.yaml", base: str = "jobs/digits_lenet.yaml") -> Path:
        job = shift_seeds(yaml.safe_load((REPO / base).read_text()))
        job["data"]["cache_dir"] = cache_dir
        job["output"] = {"dir": str(tmp_path / "runs")}
        for key, value in (changes or {}).items():
            node = job
            *parents, last = key.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[last] = value
        path = tmp_path / name
        path.write_text(yaml.safe_dump(job, sort_keys=False))
        return path

    return write


def cli_env(**extra: str) -> dict[str, str]:
    """Environment for running the `cnnjobs` CLI in a subprocess."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update({"COLUMNS": "200", **extra})  # rich wraps at 80 columns when not on a terminal
    return env
