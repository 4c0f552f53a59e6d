"""cnnjobs: YAML-defined CNN training jobs on Ray Train, Ray Data and Ray Tune.

    import cnnjobs
    job = cnnjobs.load_job("jobs/digits_lenet.yaml", ["train.epochs=5"])
    result = cnnjobs.submit(job)
    print(result.summary.metrics["test"].acc)
"""

from __future__ import annotations

import importlib
from typing import Any

from cnnjobs.errors import JobError, TrainingFailed

__version__ = "0.1.0"
__all__ = ["JobError", "TrainingFailed", "find_run", "list_runs", "load_job", "search", "submit", "__version__"]

# Imported on first use: `cnnjobs --help` and spec errors should not pay for importing Ray and torch.
_HOMES = {"load_job": "cnnjobs.spec", "submit": "cnnjobs.train.runner", "search": "cnnjobs.tune.tuner",
          "find_run": "cnnjobs.run.find", "list_runs": "cnnjobs.run.find"}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'cnnjobs' has no attribute {name!r}")
