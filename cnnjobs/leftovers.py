"""What a killed driver leaves behind: the processes of its embedded Ray instance that outlive it.

When the driver of an embedded instance (`ray.init()` started it) dies without `ray.shutdown()` (`kill -9`, the
OOM killer, a lost terminal), its GCS and raylet go with it, but Ray 2.60's dashboard agent and runtime-env agent
stay, re-parented to init, still listening on 127.0.0.1 (the dashboard agent on port 52365, which the next
instance's agent wants) and ignoring SIGTERM. Nothing of Ray stops them, so the next cnnjobs command that starts an
instance stops them first (`stop_orphans`).

A process belongs to an instance through its session folder (`/tmp/ray/session_<date>_<time>_<us>_<pid>`, open in
its log files, even once they are deleted); the session's last number is the process id of whoever started the
instance. A process is an orphan only when that process is gone and no GCS of its session runs: a live driver's
instance, a `ray start` instance (its GCS runs on) and `cnnjobs up`'s warm instance are never touched. Ray's
client server (`ray start --head` starts one) names its GCS by address instead: it is an orphan when nothing
listens there any more.
"""

from __future__ import annotations

import os
import re

import psutil

SESSION = re.compile(r"/(session_\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d_\d+_(\d+))(?:/|$)")
GRACE_S = 3.0


def _files(process: psutil.Process) -> list[str]:
    """The paths of a process's open files, deleted ones included (Linux's /proc; elsewhere what psutil sees)."""
    folder = f"/proc/{process.pid}/fd"
    if os.path.isdir(folder):
        paths = []
        for fd in os.listdir(folder):
            try:
                paths.append(os.readlink(os.path.join(folder, fd)))
            except OSError:
                continue
        return paths
    return [item.path for item in process.open_files()]


def session_of(process: psutil.Process) -> tuple[str, int] | None:
    """(session name, pid of its starter) of a Ray process, from its command line or its open files."""
    try:
        texts = [" ".join(process.cmdline()), *_files(process)]
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None
    for text in texts:
        found = SESSION.search(text) or SESSION.search(text.replace("--session-name=", "/"))
        if found:
            return found[1], int(found[2])
    return None


def _ray_processes() -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["name", "cmdline"]):
        name, cmdline = process.info["name"] or "", " ".join(process.info["cmdline"] or [])
        if name.startswith("ray::") or cmdline.startswith("ray::") or "/ray/" in cmdline or "gcs_server" in name \
                or "raylet" in name:
            found.append(process)
    return found


CLIENT_SERVER = re.compile(r"ray\.util\.client\.server .*--address=[^ ]*:(\d+)")


def orphans() -> list[psutil.Process]:
    """Ray processes of local instances whose starter is gone and whose GCS no longer runs."""
    processes = _ray_processes()
    sessions: dict[psutil.Process, tuple[str, int]] = {}
    for process in processes:
        found = session_of(process)
        if found is not None:
            sessions[process] = found
    with_gcs = {session for process, (session, _) in sessions.items()
                if "gcs_server" in (process.info.get("name") or "") and process.is_running()}
    found = [process for process, (session, starter) in sessions.items()
             if session not in with_gcs and not psutil.pid_exists(starter)]
    clients = [(process, int(match[1])) for process in processes
               if (match := CLIENT_SERVER.search(" ".join(process.info["cmdline"] or [])))]
    if clients:  # listing the sockets walks every process's files: only when there is a client server to judge
        listening = {conn.laddr.port for conn in psutil.net_connections(kind="inet")
                     if conn.status == psutil.CONN_LISTEN}
        found += [process for process, port in clients if port not in listening]
    return found


def stop(processes: list[psutil.Process], grace_s: float = GRACE_S) -> None:
    """SIGTERM, then SIGKILL for those still running after `grace_s` (Ray's agents ignore SIGTERM)."""
    for process in processes:
        try:
            process.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(processes, timeout=grace_s)
    for process in alive:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=grace_s)


def stop_orphans() -> int:
    """Stop the orphans; returns how many there were."""
    found = orphans()
    stop(found)
    return len(found)
