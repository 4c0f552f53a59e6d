"""The models: every architecture enters through `register` (`registry.py`), every model leaves through
`build_model` (`factory.py`).

`catalog` (what is known of each architecture without torch) imports nothing heavy; the rest is imported on
first use, so that the job schema can read the catalog without importing torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["build_model", "list_models", "register"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from cnnjobs.models import factory

        return getattr(factory, name)
    raise AttributeError(f"module 'cnnjobs.models' has no attribute {name!r}")
