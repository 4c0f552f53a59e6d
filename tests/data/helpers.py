"""Tiny datasets made by the tests, in the real layouts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from cnnjobs.spec import DataSpec


def spec(source: dict, cache_dir: Path, **changes) -> DataSpec:
    return DataSpec.model_validate({"source": source, "image_size": 16, "cache_dir": str(cache_dir), **changes})


def image(path: Path, colour=(200, 30, 30), size=(20, 24), mode="RGB", **save) -> Path:
    """A solid image (plus a dark corner so orientation can be checked) saved at `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.zeros((size[1], size[0], 3), np.uint8) + np.array(colour, np.uint8)
    array[: size[1] // 4, : size[0] // 4] = 0
    Image.fromarray(array, "RGB").convert(mode).save(path, **save)
    return path


def class_folders(root: Path, classes=("cat", "dog"), per_class=6, ext="png") -> Path:
    for index, name in enumerate(classes):
        for i in range(per_class):
            image(root / name / f"{name}_{i}.{ext}", colour=(40 + 150 * index, 80, 200 - 150 * index))
    return root
