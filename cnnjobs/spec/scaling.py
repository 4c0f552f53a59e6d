"""The `scaling:` and `output:` sections: how many workers on what hardware, and where runs are written and tracked."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from cnnjobs.spec.base import Section


class ScalingSpec(Section):
    """How many Ray Train workers, on what hardware."""

    num_workers: int = Field(1, ge=1, description="Data-parallel (DDP) workers.")
    use_gpu: bool | Literal["auto"] = Field(
        "auto", description="`auto` uses one GPU per worker when the cluster has enough GPUs."
    )
    cpus_per_worker: float = Field(1.0, gt=0, description="CPUs reserved by each worker.")
    placement: Literal["pack", "spread", "strict_spread"] = Field(
        "pack", description="Where the workers go on a cluster (Ray's placement strategy): `pack` fills a node "
        "first, `spread` spreads them over the nodes where it can, `strict_spread` puts each on its own node.")
    in_process: bool | Literal["auto"] = Field(
        "auto", description="Run the training loop in the driver process (Ray Train's local mode): no worker "
        "process to start, seconds to the first step. `auto`: when the job has one CPU worker and Ray is a single "
        "node on this machine (the embedded default); `false` always starts worker processes, which "
        "`train.max_failures` can restart.")


class MlflowSpec(Section):
    """Tracking in MLflow: every run (and every trial of a search, nested under it) in a tracking server."""

    tracking_uri: str | None = Field(None, description="The tracking server, e.g. `http://mlflow.example:5000` "
                                     "(default: the `MLFLOW_TRACKING_URI` environment variable).")
    experiment: str | None = Field(None, description="The MLflow experiment (created when missing; default: the "
                                   "job's name).")
    tags: dict[str, str] = Field(default_factory=dict, description="Tags added to every MLflow run of the job.")


class OutputSpec(Section):
    """Where runs are written (and tracked)."""

    dir: str = Field("runs", description="Runs go to `<dir>/<job name>/<run id>/`; a local path or an "
                     "s3:// / gs:// URI (needed for multi-node clusters).")
    mlflow: MlflowSpec | None = Field(None, description="Track the runs in MLflow (off by default; "
                                      "`MLFLOW_TRACKING_URI` in the environment turns it on too).")
