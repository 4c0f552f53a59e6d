"""Readers of the datasets users bring, each turning a `data.source` into a list of labelled examples.

A reader lists examples without loading pixels (so listing 100k files is cheap); pixels are loaded one example
at a time while the shards are written.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from PIL import Image

from cnnjobs.spec import BuiltinSource, DataSpec

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Example:
    """One image: where it comes from, its label index per task, and its split when the source fixes one."""

    ref: str
    labels: dict[str, int]
    load: Callable[[], Image.Image] = field(repr=False, compare=False)
    split: str | None = None


@dataclass(frozen=True)
class SourceData:
    """Everything a reader found: class names per task, the examples, and a fingerprint of the source files."""

    tasks: dict[str, list[str]]
    examples: list[Example]
    fingerprint: str


def read_source(spec: DataSpec) -> SourceData:
    """List the examples of `spec.source`."""
    readers: dict[type, Callable[[DataSpec], SourceData]] = {BuiltinSource: _read_builtin}
    return readers[type(spec.source)](spec)


def _read_builtin(spec: DataSpec) -> SourceData:
    """scikit-learn's digits: 1,797 real 8x8 scans (values 0-16), one task `digit` with classes 0-9."""
    import sklearn
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = np.round(digits.images * (255 / 16)).astype(np.uint8)

    def loader(index: int) -> Callable[[], Image.Image]:
        return lambda: Image.fromarray(pixels[index], mode="L")

    examples = [Example(f"digits[{i}]", {"digit": int(y)}, loader(i)) for i, y in enumerate(digits.target)]
    fingerprint = hashlib.sha256(pixels.tobytes() + digits.target.tobytes()).hexdigest()[:16]
    return SourceData({"digit": [str(c) for c in range(10)]}, examples,
                      json.dumps({"sklearn": sklearn.__version__, "data": fingerprint}))


def assign_splits(examples: list[Example], val: float, test: float, seed: int,
                  stratify_task: str) -> dict[str, list[Example]]:
    """Split examples that carry no split of their own, per class of `stratify_task`, reproducibly for `seed`.

    Each class keeps round(n * fraction) examples in val and test (at least one when the class has three or more
    and the fraction is non-zero), so small classes are represented in every split.
    """
    out: dict[str, list[Example]] = {name: [] for name in SPLITS}
    unassigned: dict[int, list[Example]] = {}
    for example in examples:
        if example.split is not None:
            out[example.split].append(example)
        else:
            unassigned.setdefault(example.labels[stratify_task], []).append(example)
    rng = np.random.default_rng(seed)
    for label in sorted(unassigned):
        group = unassigned[label]
        order = rng.permutation(len(group))
        n_val, n_test = (_held_out(len(group), fraction) for fraction in (val, test))
        out["val"] += [group[i] for i in order[:n_val]]
        out["test"] += [group[i] for i in order[n_val:n_val + n_test]]
        out["train"] += [group[i] for i in order[n_val + n_test:]]
    return out


def _held_out(n: int, fraction: float) -> int:
    if fraction == 0:
        return 0
    return max(int(round(n * fraction)), 1 if n >= 3 else 0)
