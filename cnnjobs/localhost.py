"""What a Ray instance on this machine needs, for the embedded instance (`session.py`) and the warm one
(`local_ray.py`) alike: the loopback address and the switch that keeps Ray's services on it, and its CPUs.

A local instance listens on 127.0.0.1 only: a training job on a laptop must not open Ray's ports (which run
arbitrary code) to the network. Ray 2.60 binds every gRPC server (GCS, raylet, object manager, core workers), the
dashboard agent, the runtime-env and metrics agents to the node's address, and takes 127.0.0.1 as the node's
address only when `ray_constants.ENABLE_RAY_CLUSTER` is off (otherwise it replaces 127.0.0.1 by the machine's
routable address); `loopback_only` turns it off while a local instance starts and runs.
"""

from __future__ import annotations

import math
import os
from contextlib import contextmanager
from typing import Iterator

import ray._private.ray_constants as ray_constants  # private: the switch that keeps a local node on loopback

LOOPBACK = "127.0.0.1"


def loopback_env(env: dict[str, str]) -> dict[str, str]:
    """The environment for a `ray start --head` whose services listen on 127.0.0.1 only."""
    return {**env, ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR: "0"}


@contextmanager
def loopback_only() -> Iterator[None]:
    """Make Ray take 127.0.0.1 as this node's address (see the module's docstring), in this process and in the
    processes a local instance starts (they read the switch from the environment they inherit)."""
    saved = ray_constants.ENABLE_RAY_CLUSTER, os.environ.get(ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR)
    ray_constants.ENABLE_RAY_CLUSTER = False
    os.environ[ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR] = "0"
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved[0]
        if saved[1] is None:
            os.environ.pop(ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR, None)
        else:
            os.environ[ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR] = saved[1]


def local_cpus(workers: int, cpus_per_worker: float) -> int:
    """CPUs for the embedded instance: the machine's, but always one more than the workers reserve.

    Ray Data's read and decode tasks need CPUs of their own; if the workers take every CPU the pipeline
    never gets scheduled and training waits forever (see RAY_NOTES.md).
    """
    return max(os.cpu_count() or 1, math.ceil(workers * cpus_per_worker) + 1)
