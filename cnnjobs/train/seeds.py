"""Every seed of a run, in one place: a run is a function of the job's seeds, and each epoch and step of it a
function of the seeds and its number, so a run resumed at epoch k, or restarted after a worker died, draws exactly
what an uninterrupted one drew."""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (the CPU generator, and every GPU's)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def weights(train_seed: int) -> int:
    """The initial weights: the same on every worker."""
    return train_seed


def dropout(train_seed: int, rank: int, epoch: int) -> int:
    """Dropout (and anything else drawn from the global generators) during an epoch: a stream per worker and epoch."""
    return train_seed + 1000 * rank + epoch


def order(train_seed: int, epoch: int) -> int:
    """The epoch's order of the training rows: the same on every worker (one permutation of the whole split)."""
    return train_seed + 7919 * epoch


def augment(data_seed: int, epoch: int, rank: int, step: int) -> int:
    """One training step's augmentation draws: a function of `data.seed` and the step's place in the run."""
    return (data_seed * 1_000_003 + epoch * 7919 + rank * 104_729 + step) % 2**63
