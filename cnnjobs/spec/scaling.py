"""The `scaling:` and `output:` sections: how many workers on what hardware, and where runs are written."""

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


class OutputSpec(Section):
    """Where runs are written."""

    dir: str = Field("runs", description="Runs go to `<dir>/<job name>/<run id>/`; a local path or an "
                     "s3:// / gs:// URI (needed for multi-node clusters).")
