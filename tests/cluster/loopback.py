"""A real two-node Ray cluster on this machine, every service on 127.0.0.1, for the cluster tests.

    python -m tests.cluster.loopback head --cpus 2 --token-file PATH           # prints {"gcs": ..., "dashboard": ...}
    python -m tests.cluster.loopback join GCS --cpus 1 [--hide PATH]            # a second node

Each mode runs until it is terminated (SIGTERM), then stops its node's processes. `ray start` cannot put a
second node on 127.0.0.1 in Ray 2.60 (it replaces 127.0.0.1 by the machine's address, or refuses a multi-node
cluster when told not to), so the nodes are started the way Ray's own test utility (`ray.cluster_utils`) starts
them. `--hide PATH` starts the second node in a mount namespace of its own with an empty tmpfs over PATH: a
folder the driver writes that this node cannot see, as node-local storage on a real cluster.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time

# Every Ray process of the nodes (the dashboard agent, job supervisors, the jobs' drivers) inherits this: without
# it each would replace 127.0.0.1 by the machine's address and never reach a GCS that listens on loopback only.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for_term() -> None:
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    while not stop:
        time.sleep(0.2)


def head(cpus: int) -> None:
    from ray.cluster_utils import Cluster

    dashboard = _free_port()
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": cpus, "node_ip_address": "127.0.0.1", "include_dashboard": True,
        "dashboard_host": "127.0.0.1", "dashboard_port": dashboard, "object_store_memory": 256 * 2**20,
        "dashboard_agent_listen_port": _free_port()})  # not 52365: another node or instance may hold it
    print(json.dumps({"gcs": cluster.address, "dashboard": f"http://127.0.0.1:{dashboard}",
                      "session": cluster.head_node.get_session_dir_path()}), flush=True)
    _wait_for_term()
    cluster.shutdown()


def join(gcs: str, cpus: int, hide: str | None) -> None:
    if hide and os.environ.get("CNNJOBS_NODE_NAMESPACE") != "1":  # re-run inside a mount namespace of its own
        command = ["unshare", "--mount", "--propagation", "private", sys.executable, "-m", "tests.cluster.loopback",
                   "join", gcs, "--cpus", str(cpus), "--hide", hide]
        os.execvpe("unshare", command, {**os.environ, "CNNJOBS_NODE_NAMESPACE": "1"})
    if hide:
        os.makedirs(hide, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", hide], check=True)
    from ray._private.node import Node
    from ray._private.parameter import RayParams

    params = RayParams(gcs_address=gcs, node_ip_address="127.0.0.1", num_cpus=cpus, num_gpus=0,
                       object_store_memory=256 * 2**20, include_log_monitor=False, node_manager_port=0,
                       min_worker_port=0, max_worker_port=0, dashboard_agent_listen_port=_free_port())
    node = Node(params, head=False, shutdown_at_exit=True, spawn_reaper=True)
    print(json.dumps({"node_id": node.node_id}), flush=True)
    _wait_for_term()
    node.kill_all_processes(check_alive=False, allow_graceful=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    modes = parser.add_subparsers(dest="mode", required=True)
    first = modes.add_parser("head")
    first.add_argument("--cpus", type=int, default=2)
    second = modes.add_parser("join")
    second.add_argument("gcs")
    second.add_argument("--cpus", type=int, default=1)
    second.add_argument("--hide")
    args = parser.parse_args()
    if args.mode == "head":
        head(args.cpus)
    else:
        join(args.gcs, args.cpus, args.hide)


if __name__ == "__main__":
    main()
