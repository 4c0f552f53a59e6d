"""The search space: a job's `tune.space` as Ray Tune sampling objects, and the seeded sampler that draws trials."""

from __future__ import annotations

import math
from typing import Any

from ray import tune
from ray.tune.search.basic_variant import BasicVariantGenerator

from cnnjobs.spec import Dimension, JobSpec, TuneSpec


def search_space(spec: TuneSpec) -> dict[str, Any]:
    """The `tune.space` of a job as Ray Tune sampling objects, keyed by dotted job key."""
    return {key: _domain(dimension) for key, dimension in spec.space.items()}


def _domain(dimension: Dimension) -> Any:
    if dimension.choice is not None:
        return tune.choice(dimension.choice)
    if dimension.grid is not None:
        return tune.grid_search(dimension.grid)
    if dimension.uniform is not None:
        return tune.uniform(*dimension.uniform)
    if dimension.loguniform is not None:
        return tune.loguniform(*dimension.loguniform)
    return tune.randint(*dimension.randint)


def sampler(job: JobSpec, max_concurrent: int = 0) -> BasicVariantGenerator:
    """Tune's grid/random sampler, seeded by `tune.seed` (else `train.seed`): a job samples the same trials.

    It also holds the concurrency limit: Tune ignores `TuneConfig.max_concurrent_trials` when it is given a
    sampler of this kind (0 = no limit).
    """
    seed = job.tune.seed if job.tune.seed is not None else job.train.seed
    return BasicVariantGenerator(max_concurrent=max_concurrent, random_state=seed)


def num_trials(spec: TuneSpec) -> int:
    """Trials the search runs: `num_samples` times every combination of the `grid` values."""
    return spec.num_samples * math.prod(len(d.grid) for d in spec.space.values() if d.grid is not None)
