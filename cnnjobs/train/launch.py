"""Everything a run does before it trains, in the order that fails fastest: list the data and check the job
against it, check the machine, start or join Ray and check the cluster, then write the shards.

`submit`, `search` and `plan` all start here, so a job is refused for the same reasons, with the same words,
whichever command runs it; nothing is written and no Ray instance is started for a job that would be refused.
"""

from __future__ import annotations

import os
import secrets
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import ray

from cnnjobs import storage
from cnnjobs.checks import check_cluster, check_machine, check_storage, check_tasks, check_weights, located
from cnnjobs.data.chunks import seen_by
from cnnjobs.data.pipeline import warm_up
from cnnjobs.data.shards import RAY_MIN_IMAGES, Manifest, plan_shards
from cnnjobs.errors import JobError
from cnnjobs.results.tracking import check_client
from cnnjobs.session import RaySession, ray_session
from cnnjobs.spec import JobSpec


@dataclass(frozen=True)
class Launch:
    """A job ready to train: its shards, the Ray session, and the hardware decisions taken for it."""

    manifest: Manifest
    cached: bool  # the shards were there already
    session: RaySession
    use_gpu: bool


@contextmanager
def launch(job: JobSpec, address: str | None = None,
           notify: Callable[[str], None] = lambda phase: None) -> Iterator[Launch]:
    """Check `job` against its data and hardware, join or start Ray, write the shards; Ray stops on exit
    when this started it."""
    with located(job):
        check_storage(job)  # a missing bucket or refused credentials stop here, before anything is written
        check_client(job)  # tracking asked for without the MLflow client
        notify("listing data")
        plan = plan_shards(job.data)  # a missing path or a bad table stops here, before Ray starts
        check_tasks(job, plan.tasks)
        check_weights(job)
        embedded = not (address or os.environ.get("RAY_ADDRESS") or ray.is_initialized())
        if embedded:
            check_machine(job)
        cached = plan.cached is not None
        if not cached and len(plan.source.examples) < RAY_MIN_IMAGES:
            notify("writing shards")  # small: faster here than on Ray, and a bad image stops it before Ray starts
            plan.write()
        notify("starting Ray" if embedded else "connecting to Ray")
        with ray_session(address, job.scaling.num_workers, job.scaling.cpus_per_worker) as session:
            if session.started:
                warm_up()  # while the cluster is checked and the shards written
            use_gpu = check_cluster(job, ray.cluster_resources(), in_process=False)
            check_shared_storage(job)
            if plan.cached is None:
                notify("writing shards")
            yield Launch(plan.write(), cached, session, use_gpu)


def check_shared_storage(job: JobSpec) -> None:
    """On a cluster of several nodes, `output.dir` and `data.cache_dir` must be storage every node sees: a URI
    (s3://, gs://) or a shared mount. A local path is probed: a file written here must be visible from a task
    on every node (an NFS mount at the same path passes, a node-local disk does not)."""
    nodes = [node for node in ray.nodes() if node.get("Alive")]
    if len(nodes) < 2:
        return
    for key, location in (("output.dir", job.output.dir), ("data.cache_dir", job.data.cache_dir)):
        if storage.is_uri(location):
            continue
        path = storage.resolve(location)[1]
        existing = path  # probe the deepest folder that exists: creating the path would be writing something
        while not os.path.isdir(existing):
            existing = os.path.dirname(existing)
        marker = os.path.join(existing, f".cnnjobs-probe-{secrets.token_hex(4)}")
        with open(marker, "w") as out:
            out.write("probe")
        try:
            blind = [node["NodeManagerAddress"] for node, seen in zip(nodes, seen_by(nodes, [marker])) if not seen]
        finally:
            os.remove(marker)
        if blind:
            raise JobError(f"{job.source}: {key}: {path} is not shared: {len(blind)} of the cluster's {len(nodes)} "
                           f"nodes cannot see it; use storage every node reaches: s3://BUCKET/..., gs://BUCKET/..., "
                           "or a shared mount (NFS) at the same path on every node")
