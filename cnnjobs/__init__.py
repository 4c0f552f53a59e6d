"""cnnjobs: YAML-defined CNN training jobs on Ray Train, Ray Data and Ray Tune.

    import cnnjobs
    job = cnnjobs.load_job("jobs/digits_lenet.yaml", ["train.epochs=5"])
    result = cnnjobs.submit(job)
    print(result.summary["metrics"]["test"]["acc"])
"""

from __future__ import annotations

from typing import Any

from cnnjobs.errors import JobError, TrainingFailed

__version__ = "0.1.0"
__all__ = ["JobError", "TrainingFailed", "load_job", "submit", "__version__"]


def __getattr__(name: str) -> Any:
    # Imported on first use: `cnnjobs --help` and spec errors should not pay for importing Ray and torch.
    if name == "load_job":
        from cnnjobs.spec import load_job

        return load_job
    if name == "submit":
        from cnnjobs.train.runner import submit

        return submit
    raise AttributeError(f"module 'cnnjobs' has no attribute {name!r}")
