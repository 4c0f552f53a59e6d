"""Architecture and hyperparameter search (`cnnjobs tune`): the space, the CPU budget, the trials, the search.

    space.py    the job's `tune.space` as Ray Tune samplers, seeded
    budget.py   how many trials run at once (a CPU kept free for each trial's data pipeline)
    trials.py   trial rows, their ranking, `tune_results.csv`, the live tracker
    tuner.py    `search()`: Tuner, ASHA, resume, the winner's best_job.yaml and best_model.pt
"""

from __future__ import annotations

from typing import Any

__all__ = ["Concurrency", "TrialRow", "TuneResult", "num_trials", "plan_concurrency", "rank_rows", "records",
           "results_csv", "sampler", "search", "search_space"]

_HOMES = {"Concurrency": "budget", "plan_concurrency": "budget", "TrialRow": "trials", "rank_rows": "trials",
          "records": "trials", "results_csv": "trials", "TuneResult": "tuner", "search": "tuner",
          "num_trials": "space", "sampler": "space", "search_space": "space"}


def __getattr__(name: str) -> Any:
    # Imported on first use: `cnnjobs tune --help` and a bad job file should not pay for importing Ray Tune.
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(f"cnnjobs.tune.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'cnnjobs.tune' has no attribute {name!r}")
