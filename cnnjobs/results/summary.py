"""Turning the per-epoch metric rows into the summary: best epoch, and metrics per split and per task."""

from __future__ import annotations

from typing import Any

SPLITS = ("train", "val", "test")


def nest(row: dict[str, Any], split: str) -> dict[str, Any]:
    """`{"val/loss": .., "val/digit/acc": ..}` -> `{"loss": .., "acc": .., "tasks": {"digit": {"acc": ..}}}`."""
    out: dict[str, Any] = {"tasks": {}}
    for key, value in row.items():
        parts = key.split("/")
        if parts[0] != split or isinstance(value, dict):
            continue
        if len(parts) == 2:
            out[parts[1]] = value
        elif len(parts) == 3:
            out["tasks"].setdefault(parts[1], {})[parts[2]] = value
    return out


def split_metrics(rows: list[dict[str, Any]], monitor: str) -> dict[str, Any]:
    """Summary fields from the epoch rows: train/val at the best epoch, test of the best model (last row)."""
    last = rows[-1]
    best_epoch = int(last.get("best_epoch") or last["epoch"])
    best = next(row for row in rows if row["epoch"] == best_epoch)
    metrics = {"train": nest(best, "train"), "val": nest(best, "val")}
    if any(key.startswith("test/") for key in last):
        metrics["test"] = nest(last, "test")
    return {
        "best_epoch": best_epoch,
        "best_metric": best.get(monitor),
        "metrics": metrics,
        "test_confusion": last.get("test/confusion"),
    }
