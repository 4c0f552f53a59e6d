"""The two-node loopback cluster the cluster tests share (started and stopped here; see loopback.py).

These tests run before any other test starts the session's own Ray instance (see tests/conftest.py), so that
only one Ray instance runs on the machine at a time.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO, cli_env


@dataclass
class LoopbackCluster:
    gcs: str
    dashboard: str
    session: str
    hidden: Path  # a folder the driver's node sees and the second node does not
    processes: list[subprocess.Popen]

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a client of this cluster: its token is on (Ray 2.60's default)."""
        return cli_env(RAY_AUTH_MODE="token", **extra)


def _start(args: list[str], env: dict[str, str]) -> tuple[subprocess.Popen, dict]:
    process = subprocess.Popen([sys.executable, "-m", "tests.cluster.loopback", *args], cwd=REPO, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    line = process.stdout.readline()
    if not line:
        raise RuntimeError(f"loopback node did not start: {process.stderr.read()[-3000:]}")
    return process, json.loads(line)


@pytest.fixture(scope="package")
def loopback_cluster(tmp_path_factory: pytest.TempPathFactory, s3_server):
    """A head (2 CPUs, dashboard, Jobs API) and a second node (1 CPU) on 127.0.0.1, token authentication on; both
    nodes started with the variables that reach the session's S3 server (as `ray start` on a real cluster's nodes
    would be, or an instance profile gives them)."""
    if os.geteuid() != 0:
        pytest.skip("the second node hides a folder in a mount namespace of its own (needs root)")
    hidden = tmp_path_factory.mktemp("node-local")
    # As on a real cluster's image: `cnnjobs` on the PATH of the nodes (the Jobs API runs it as the entrypoint).
    env = cli_env(RAY_AUTH_MODE="token", PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    head, info = _start(["head", "--cpus", "2"], env)
    processes = [head]
    try:
        second, _ = _start(["join", info["gcs"], "--cpus", "1", "--hide", str(hidden)], env)
        processes.append(second)
        yield LoopbackCluster(info["gcs"], info["dashboard"], info["session"], hidden, processes)
    finally:
        for process in reversed(processes):  # each stops its node's processes on SIGTERM
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
