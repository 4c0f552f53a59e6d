"""The `tune:` section: a search space over job keys, the ASHA scheduler's settings, the search's limits."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from cnnjobs.metrics import Mode, check_monitor
from cnnjobs.spec.base import Section

# Keys a search may vary: everything a trial decides by itself. Shards are prepared once for all trials, so the
# data keys baked into them (source, size, split, ...) are fixed, and so are scaling and output.
TUNABLE = ("model.", "train.", "data.normalize")


class Dimension(Section):
    """One searched key: exactly one of `choice`, `grid`, `uniform`, `loguniform`, `randint`."""

    choice: list[Any] | None = Field(None, min_length=1, description="Sample one of these values.")
    grid: list[Any] | None = Field(None, min_length=1, description="Try every value (crossed with other grids).")
    uniform: tuple[float, float] | None = Field(None, description="[low, high]: a float, uniformly.")
    loguniform: tuple[float, float] | None = Field(None, description="[low, high]: a float, uniform in log space.")
    randint: tuple[int, int] | None = Field(None, description="[low, high): an integer.")

    @model_validator(mode="after")
    def _one_kind(self) -> "Dimension":
        kinds = [name for name in type(self).model_fields if getattr(self, name) is not None]
        if len(kinds) != 1:
            raise ValueError("give exactly one of choice, grid, uniform, loguniform, randint "
                             f"(got {', '.join(kinds) or 'none'})")
        bounds = self.uniform or self.loguniform or self.randint
        if bounds and not bounds[0] < bounds[1]:
            raise ValueError(f"{kinds[0]}: low must be < high (got {list(bounds)})")
        if self.loguniform and self.loguniform[0] <= 0:
            raise ValueError(f"loguniform: bounds must be > 0 (got {list(self.loguniform)})")
        return self

    @property
    def probes(self) -> list[Any]:
        """Values a trial may get that together cover the edges: every listed value, or both bounds."""
        if self.choice is not None or self.grid is not None:
            return list(self.choice if self.choice is not None else self.grid)
        if self.randint:
            return [self.randint[0], self.randint[1] - 1]
        return list(self.uniform or self.loguniform)


class TuneSpec(Section):
    """An architecture / hyperparameter search (`cnnjobs tune`): trials sampled from `space`, early-stopped by ASHA."""

    space: dict[str, Dimension] = Field(min_length=1, description="Dotted job key -> values to search, e.g. "
                                        "`train.lr: {loguniform: [1.0e-4, 1.0e-1]}`.")
    num_samples: int = Field(1, ge=1, description="Trials sampled from the space (each repeats every `grid`).")
    seed: int | None = Field(None, description="Seed of the sampling: the same seed samples the same trials; "
                             "`train.seed` by default.")
    scheduler: Literal["asha", "none"] = Field("asha", description="`asha` stops poor trials early; `none` runs "
                                                "every trial for `train.epochs`.")
    grace_period: int = Field(1, ge=1, description="ASHA: epochs every trial runs before it can be stopped.")
    reduction_factor: float = Field(3, gt=1, description="ASHA: keep about 1/reduction_factor of the trials at "
                                    "each rung (epochs grace_period x reduction_factor^k).")
    metric: str | None = Field(None, description="Metric that ranks trials; `train.monitor` by default.")
    mode: Mode | None = Field(None, description="Whether `metric` is better lower or higher; by default `min` for "
                              "losses, `max` otherwise.")
    max_concurrent_trials: int | None = Field(None, ge=1, description="Upper bound on trials at once; the CPUs and "
                                              "GPUs of the cluster may allow fewer (`cnnjobs tune` says which).")
    time_budget_s: float | None = Field(None, gt=0, description="Stop the search after this many seconds.")

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str | None) -> str | None:
        return None if value is None else check_monitor(value)

    @field_validator("space")
    @classmethod
    def _tunable(cls, value: dict[str, Dimension]) -> dict[str, Dimension]:
        for key in value:
            if not key.startswith(TUNABLE):
                raise ValueError(f"cannot search {key!r}: only model.*, train.* and data.normalize vary between "
                                 "trials (the shards are prepared once for all of them)")
        return value
