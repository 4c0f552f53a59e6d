"""A warm local Ray instance: `cnnjobs up` starts one on this machine, later submits without `--address` use it
(seconds instead of starting Ray every time), `cnnjobs down` stops it.

It is an ordinary `ray start --head` with its own temporary folder (so `down` stops this instance and no other),
every service bound to 127.0.0.1 as the embedded instance is, and its address kept in
`~/.cache/cnnjobs/local_ray.json` (`$XDG_CACHE_HOME` when set).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from cnnjobs.errors import JobError
from cnnjobs.leftovers import stop, stop_orphans
from cnnjobs.localhost import LOOPBACK, local_cpus, loopback_env

STATE = Path(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")) / "cnnjobs" / "local_ray.json"
TEMP_DIR = os.path.join(tempfile.gettempdir(), f"cnnjobs-ray-{os.getuid()}")  # short: Ray's socket paths


@dataclass(frozen=True)
class Instance:
    """Where the warm instance listens."""

    address: str  # GCS host:port, what ray.init(address=...) takes
    dashboard: str  # http://127.0.0.1:PORT, the Jobs API
    temp_dir: str


def running() -> Instance | None:
    """The instance `cnnjobs up` started, if it still answers (a stale record is removed)."""
    if not STATE.is_file():
        return None
    try:
        instance = Instance(**json.loads(STATE.read_text()))
        host, port = instance.address.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=1):
            return instance
    except (OSError, ValueError, TypeError):
        STATE.unlink(missing_ok=True)
        return None


def up(cpus: int | None = None) -> tuple[Instance, bool]:
    """Start the warm instance unless it is up; returns it and whether it was started now."""
    current = running()
    if current is not None:
        return current, False
    stop_orphans()  # a killed driver's agents would hold the ports this instance wants
    port, dashboard_port = _free_port(), _free_port()
    command = [_ray(), "start", "--head", f"--port={port}", f"--node-ip-address={LOOPBACK}",
               f"--num-cpus={cpus or local_cpus(1, 1.0)}", "--include-dashboard=true",
               f"--dashboard-host={LOOPBACK}", f"--dashboard-port={dashboard_port}", f"--temp-dir={TEMP_DIR}",
               "--disable-usage-stats"]
    done = subprocess.run(command, capture_output=True, text=True, env=loopback_env(os.environ))
    if done.returncode != 0:
        raise JobError(f"up: `ray start` failed: {(done.stderr or done.stdout).strip().splitlines()[-1]}")
    instance = Instance(f"{LOOPBACK}:{port}", f"http://{LOOPBACK}:{dashboard_port}", TEMP_DIR)
    STATE.parent.mkdir(parents=True, exist_ok=True)
    STATE.write_text(json.dumps(asdict(instance)))
    return instance, True


def down(grace_s: float = 10.0) -> bool:
    """Stop the warm instance's processes (those started with its temporary folder); False if there was none."""
    import psutil

    record = STATE.is_file()
    STATE.unlink(missing_ok=True)
    processes = [p for p in psutil.process_iter(["cmdline"]) if TEMP_DIR in " ".join(p.info["cmdline"] or [])]
    stop(processes, grace_s)
    stop_orphans()  # what does not name the temporary folder: the agents (their names rewritten), the client server
    shutil.rmtree(TEMP_DIR, ignore_errors=True)
    return record or bool(processes)


def _ray() -> str:
    """The `ray` command of this Python environment."""
    beside = os.path.join(os.path.dirname(sys.executable), "ray")
    return beside if os.path.exists(beside) else "ray"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]

