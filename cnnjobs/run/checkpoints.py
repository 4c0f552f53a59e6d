"""Checkpoints: what one holds, writing it into the run folder, and finding the newest one that loads.

A checkpoint folder `checkpoint_epoch-NNNN/` holds the epoch's weights (`model.pt`), the rest of the training
state (`state.pt`: optimizer, schedule, scaler, early-stopping counter, best epoch so far, the job it trained
with), the best weights so far when they are not this epoch's (`best_model.pt`), and `meta.json` (epoch and
monitored score, for keeping the best ones). Everything is loaded with `torch.load(weights_only=True)`: a
checkpoint can hold tensors and plain values, never code.

`persist` is the one writer of a checkpoint into the run folder, for both ways a loop runs: in Ray Train's local
mode the loop calls it, and Ray Train worker processes hand it to `ray.train.report` as the upload
(`upload_fn`). Each file is written whole (`storage.write_bytes`) and `meta.json` last: it marks the checkpoint
complete, on every storage, without renaming a folder (S3 and GCS have none to rename). A folder without it (a
driver killed during the upload, a disk that filled up) is passed over. The best `train.keep_checkpoints` by the
monitor plus the latest are kept: by `persist` in local mode, by Ray's CheckpointConfig with worker processes.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from typing import Any, Callable

import pyarrow.fs as pafs
import torch

from cnnjobs import storage
from cnnjobs.metrics import rank_key
from cnnjobs.run import layout

META = "meta.json"


class CheckpointError(Exception):
    """A checkpoint that cannot be loaded (missing or truncated file); the message says which and why."""


@dataclass
class Loaded:
    """A checkpoint read back: the epoch's weights, the training state, the best weights so far."""

    name: str
    weights: dict[str, torch.Tensor]
    state: dict[str, Any]
    best: dict[str, torch.Tensor] | None


def write(folder: str, weights: dict[str, torch.Tensor], state: dict[str, Any],
          best: dict[str, torch.Tensor] | None, score: float | None) -> None:
    """Write a checkpoint into the local `folder`; `best` is None when the best weights are this epoch's."""
    torch.save(weights, os.path.join(folder, layout.CHECKPOINT_MODEL))
    # Whether best_model.pt belongs to this checkpoint: a folder written again over a damaged one may hold an
    # older best_model.pt.
    torch.save({**state, "has_best": best is not None}, os.path.join(folder, layout.CHECKPOINT_STATE))
    if best is not None:
        torch.save(best, os.path.join(folder, layout.CHECKPOINT_BEST))
    with open(os.path.join(folder, META), "w") as out:
        json.dump({"epoch": state["epoch"], "score": score}, out)


def read(location: str) -> Loaded:
    """Read the checkpoint folder at `location` (local or URI); CheckpointError if any part is unreadable."""
    name = storage.name(location)

    def load(file: str, required: bool = True) -> Any:
        try:
            raw = storage.read_bytes(storage.join(location, file))
        except FileNotFoundError:
            if required:
                raise CheckpointError(f"{name}: {file} is missing") from None
            return None
        try:
            return torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - truncated zip, bad pickle, ...: all mean "unreadable"
            raise CheckpointError(f"{name}: {file} is unreadable "
                                  f"({exc.__class__.__name__}: {str(exc).splitlines()[0][:120]})") from None

    state = load(layout.CHECKPOINT_STATE)
    return Loaded(name, load(layout.CHECKPOINT_MODEL), state,
                  load(layout.CHECKPOINT_BEST) if state.get("has_best") else None)


def in_run(run_location: str) -> list[str]:
    """The complete checkpoints of a run (those with their `meta.json`), newest epoch first."""
    return [location for location in _folders(run_location) if storage.is_file(storage.join(location, META))]


def _folders(run_location: str) -> list[str]:
    found = [(layout.checkpoint_epoch(entry.base_name), entry.base_name) for entry in storage.list_dir(run_location)
             if entry.type == pafs.FileType.Directory and layout.checkpoint_epoch(entry.base_name) is not None]
    return [storage.join(run_location, name) for _, name in sorted(found, reverse=True)]


def newest_loadable(candidates: list[str]) -> tuple[Loaded | None, list[str]]:
    """The first checkpoint of `candidates` (newest first) that loads, and why each newer one was passed over."""
    passed: list[str] = []
    for location in candidates:
        try:
            return read(location), passed
        except CheckpointError as exc:
            passed.append(str(exc))
    return None, passed


def resumable(run_location: str, recorded: list[dict[str, Any]]) -> tuple[Loaded | None, list[dict[str, Any]],
                                                                           list[str]]:
    """Where a run continues: its newest complete checkpoint that loads, the epoch rows up to it, and why each newer
    checkpoint folder was passed over (cut short, unreadable).

    A checkpoint carries the rows of every epoch up to its own (`state["rows"]`), so a run killed after saving a
    checkpoint and before recording its epoch in metrics.csv loses nothing. A checkpoint written before cnnjobs
    kept them takes its rows from metrics.csv (`recorded`), and is passed over when its epoch is not among them
    (its epoch is trained again rather than missing from the metrics)."""
    consecutive = 0
    while consecutive < len(recorded) and int(recorded[consecutive]["epoch"]) == consecutive + 1:
        consecutive += 1
    passed: list[str] = []
    for location in _folders(run_location):  # one listing; `meta.json` looked up until one loads
        if not storage.is_file(storage.join(location, META)):
            passed.append(f"{storage.name(location)} (incomplete: its writing was cut short)")
            continue
        try:
            loaded = read(location)
        except CheckpointError as exc:
            passed.append(str(exc))
            continue
        rows = loaded.state.get("rows")
        if rows is None:
            if loaded.state["epoch"] > consecutive:
                passed.append(f"{loaded.name} (its epoch is not in {layout.METRICS}: trained again)")
                continue
            rows = [row for row in recorded if int(row["epoch"]) <= loaded.state["epoch"]]
        return loaded, [dict(row) for row in rows], passed
    return None, [], passed


def persist(folder: str, run_location: str, epoch: int, keep: int | None = None, mode: str = "min") -> str:
    """Write the local checkpoint `folder` into the run folder as `checkpoint_epoch-NNNN`, `meta.json` last (see
    the module's docstring); with `keep`, then delete all but the newest and the best `keep` by score. Returns the
    checkpoint's location. The same epoch written again (after a resume) loses its marker first, so a write cut
    short there leaves it incomplete, never a mix of two versions passing for one."""
    target = storage.join(run_location, layout.checkpoint_dir(epoch))
    storage.delete_file(storage.join(target, META))
    storage.upload_folder(folder, target, last=META)
    if keep is not None:
        _prune(run_location, keep, mode)
    return target


def upload_fn(run_location: str) -> Callable[[Any, str], Any]:
    """`ray.train.report(checkpoint_upload_fn=...)` for a Ray Train worker: the checkpoint written by `persist`,
    handed back to Ray as the folder in its own storage (so Ray's CheckpointConfig keeps and prunes it)."""

    def upload(checkpoint: Any, dir_name: str) -> Any:
        import ray.train

        epoch = layout.checkpoint_epoch(dir_name)
        persist(checkpoint.path, run_location, epoch)
        context = ray.train.get_context().get_storage()
        return ray.train.Checkpoint(context.build_checkpoint_path_from_name(dir_name),
                                    filesystem=context.storage_filesystem)

    return upload


def _prune(run_location: str, keep: int, mode: str) -> None:
    """Delete all checkpoints but the newest and the best `keep` by their recorded score."""
    found = in_run(run_location)
    scored = []
    for location in found[1:]:
        try:
            score = json.loads(storage.read_text(storage.join(location, META))).get("score")
        except (OSError, ValueError):
            score = None
        scored.append((rank_key(score, mode), location))
    for _, location in sorted(scored)[keep:]:
        storage.delete_file(storage.join(location, META))  # incomplete first: a delete cut short is passed over
        storage.delete_dir(location)
