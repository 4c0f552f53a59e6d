"""Checkpoints: what one holds, writing it, and finding the newest one that loads.

A checkpoint folder `checkpoint_epoch-NNNN/` holds the epoch's weights (`model.pt`), the rest of the training
state (`state.pt`: optimizer, schedule, scaler, early-stopping counter, best epoch so far, the job it trained
with), the best weights so far when they are not this epoch's (`best_model.pt`), and `meta.json` (epoch and
monitored score, for keeping the best ones). Everything is loaded with `torch.load(weights_only=True)`: a
checkpoint can hold tensors and plain values, never code.

With Ray Train worker processes, Ray copies the folder into the run folder (`ray.train.report`). When the loop
runs in the driver process (Ray Train's local mode), Ray keeps nothing, so `persist` writes it there the same way
and keeps the best `train.keep_checkpoints` by the monitor plus the latest, as Ray's CheckpointConfig does.
"""

from __future__ import annotations

import json
import os
import posixpath
from dataclasses import dataclass
from typing import Any

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
    fs, root = storage.resolve(location)

    def load(name: str, required: bool = True) -> Any:
        path = posixpath.join(root, name)
        if fs.get_file_info(path).type != pafs.FileType.File:
            if required:
                raise CheckpointError(f"{posixpath.basename(root)}: {name} is missing")
            return None
        try:
            with fs.open_input_file(path) as stream:
                return torch.load(stream, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - truncated zip, bad pickle, ...: all mean "unreadable"
            raise CheckpointError(f"{posixpath.basename(root)}: {name} is unreadable "
                                  f"({exc.__class__.__name__}: {str(exc).splitlines()[0][:120]})") from None

    state = load(layout.CHECKPOINT_STATE)
    return Loaded(posixpath.basename(root.rstrip("/")), load(layout.CHECKPOINT_MODEL), state,
                  load(layout.CHECKPOINT_BEST) if state.get("has_best") else None)


def in_run(run_location: str) -> list[str]:
    """The checkpoint folders of a run, newest epoch first."""
    fs, root = storage.resolve(run_location)
    if fs.get_file_info(root).type != pafs.FileType.Directory:
        return []
    found = [(layout.checkpoint_epoch(info.base_name), info.base_name)
             for info in fs.get_file_info(pafs.FileSelector(root))
             if info.type == pafs.FileType.Directory and layout.checkpoint_epoch(info.base_name) is not None]
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


def persist(folder: str, run_location: str, epoch: int, keep: int, mode: str) -> str:
    """Copy the local checkpoint `folder` into the run folder as `checkpoint_epoch-NNNN` (written under a temporary
    name, then renamed: a full disk leaves the earlier ones intact), then keep the best `keep` by score and the
    newest. Returns the checkpoint's location."""
    target = storage.join(run_location, layout.checkpoint_dir(epoch))
    fs, path = storage.resolve(target)
    partial = path + ".partial"
    if fs.get_file_info(partial).type != pafs.FileType.NotFound:
        fs.delete_dir(partial)
    try:
        fs.create_dir(partial, recursive=True)
        pafs.copy_files(folder, partial, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)
        if fs.get_file_info(path).type != pafs.FileType.NotFound:
            fs.delete_dir(path)  # the same epoch again, after a resume
        fs.move(partial, path)
    except BaseException:
        if fs.get_file_info(partial).type != pafs.FileType.NotFound:
            fs.delete_dir(partial)
        raise
    _prune(run_location, keep, mode)
    return target


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
        fs, path = storage.resolve(location)
        fs.delete_dir(path)
