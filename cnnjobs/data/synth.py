"""Small, learnable, synthetic stand-ins for the seed tutorials' datasets, written in exactly their real layouts.

They exist so that every job under `jobs/` runs here, offline and in tests; they are not the real data. Each class
is drawn as a distinct shape (with random position, size, colour noise), so a small CNN learns it in a few epochs.

    fashion     styles.csv (the Kaggle columns) + images/{id}.jpg, 60x80: articleType = shape,
                baseColour = fill colour, gender = background pattern; with a few malformed rows and
                non-RGB / odd-sized images, as in the real file
    catsdogs    cats_and_dogs_filtered/{train,validation}/{cats,dogs}/cat.N.jpg (seed 000)
    dogsvscats  train/{cat,dog}.N.jpg, one flat folder, label in the file name (seed 004)
    mnist       the four gzipped IDX files, from scikit-learn's real 8x8 digits upscaled to 28x28 (seed 001)
    folder      car_frog_lizard/{train,val,test}/{car,frog,lizard}/N.png, 100x100 (seed 003)
"""

from __future__ import annotations

import csv
import gzip
import struct
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw

KINDS = ("fashion", "catsdogs", "dogsvscats", "mnist", "folder")
SHAPES = ("rectangle", "ellipse", "triangle", "cross", "diamond", "ring")
COLOURS = {"Black": (20, 20, 20), "White": (235, 235, 235), "Blue": (30, 60, 200), "Red": (200, 30, 30),
           "Green": (30, 160, 60), "Yellow": (230, 210, 40)}
GENDERS = ("Men", "Women", "Boys", "Girls", "Unisex")
ARTICLES = {"Tshirts": "rectangle", "Watches": "ring", "Handbags": "ellipse", "Casual Shoes": "triangle",
            "Sunglasses": "cross", "Jeans": "diamond"}
STYLES_COLUMNS = ["id", "gender", "masterCategory", "subCategory", "articleType", "baseColour", "season", "year",
                  "usage", "productDisplayName"]


def synth(kind: str, out: str | Path, n: int | None = None, seed: int = 0) -> Path:
    """Write the `kind` stand-in under `out`; returns the path a job's `data.source.path` should name."""
    writers: dict[str, Callable[[Path, int, np.random.Generator], Path]] = {
        "fashion": _fashion, "catsdogs": _catsdogs, "dogsvscats": _dogsvscats, "mnist": _mnist, "folder": _folder}
    defaults = {"fashion": 600, "catsdogs": 200, "dogsvscats": 200, "mnist": 1200, "folder": 75}
    if kind not in writers:
        raise ValueError(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return writers[kind](out, n or defaults[kind], np.random.default_rng(seed))


def draw(shape: str, size: tuple[int, int], fill: tuple[int, int, int], rng: np.random.Generator,
         background: Image.Image | None = None) -> Image.Image:
    """One shape of colour `fill` (jittered), at a random place and size, on `background` or noisy grey."""
    w, h = size
    if background is None:
        noise = rng.integers(90, 170, size=(h, w, 1)) + rng.integers(-20, 20, size=(h, w, 3))
        background = Image.fromarray(np.clip(noise, 0, 255).astype(np.uint8), "RGB")
    image = background.copy()
    pen = ImageDraw.Draw(image)
    side = min(w, h) * rng.uniform(0.45, 0.75)
    cx, cy = w / 2 + rng.uniform(-0.15, 0.15) * w, h / 2 + rng.uniform(-0.15, 0.15) * h
    box = (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)
    colour = tuple(int(np.clip(c + rng.integers(-25, 26), 0, 255)) for c in fill)
    if shape == "rectangle":
        pen.rectangle(box, fill=colour)
    elif shape == "ellipse":
        pen.ellipse(box, fill=colour)
    elif shape == "triangle":
        pen.polygon([(box[0], box[3]), (box[2], box[3]), (cx, box[1])], fill=colour)
    elif shape == "cross":
        t = side / 6
        pen.rectangle((box[0], cy - t, box[2], cy + t), fill=colour)
        pen.rectangle((cx - t, box[1], cx + t, box[3]), fill=colour)
    elif shape == "diamond":
        pen.polygon([(cx, box[1]), (box[2], cy), (cx, box[3]), (box[0], cy)], fill=colour)
    else:  # ring
        pen.ellipse(box, outline=colour, width=max(2, int(side / 7)))
    return image


def _pattern(gender: str, size: tuple[int, int]) -> Image.Image:
    """The background that encodes gender: plain, stripes one way or the other, checks, dots."""
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    light, dark = 225, 170
    masks = {"Men": (y // 6) % 2 == 0, "Women": (x // 6) % 2 == 0, "Boys": ((x // 8) + (y // 8)) % 2 == 0,
             "Girls": (x % 8 < 3) & (y % 8 < 3), "Unisex": np.zeros((h, w), bool)}
    grey = np.where(masks[gender], dark, light).astype(np.uint8)
    return Image.fromarray(np.repeat(grey[..., None], 3, axis=2), "RGB")


def _fashion(out: Path, n: int, rng: np.random.Generator) -> Path:
    (out / "images").mkdir(exist_ok=True)
    articles, colours = list(ARTICLES), list(COLOURS)
    with open(out / "styles.csv", "w", newline="") as handle:
        table = csv.writer(handle)
        table.writerow(STYLES_COLUMNS)
        for i in range(n):
            image_id = 10000 + i
            gender, article, colour = (values[rng.integers(len(values))] for values in (GENDERS, articles, colours))
            image = draw(ARTICLES[article], (60, 80), COLOURS[colour], rng, _pattern(gender, (60, 80)))
            if i % 97 == 5:
                image = image.convert("L")  # the real set has a few grayscale images; keep_mode: RGB drops them
            if i % 89 == 7:
                image = image.resize((48, 64))  # ... and a few of other sizes; keep_size drops them
            image.save(out / "images" / f"{image_id}.jpg", quality=90)
            name = f"{colour} {article} for {gender}"
            row = [image_id, gender, "Apparel", "Topwear", article, colour, "Summer", 2012, "Casual", name]
            if i % 101 == 11:  # like the real styles.csv: an unquoted comma in productDisplayName
                handle.write(",".join(map(str, row[:-1])) + f",{colour} {article}, for {gender}\n")
            else:
                table.writerow(row)
    return out / "styles.csv"


def _two_class(out: Path, per_class: int, rng: np.random.Generator, name: Callable[[str, int], Path]) -> None:
    """Cats as ellipses and dogs as triangles, on noisy backgrounds, with random colours (150x150 JPEG)."""
    for label, shape in (("cat", "ellipse"), ("dog", "triangle")):
        for i in range(per_class):
            fill = tuple(int(v) for v in rng.integers(0, 256, 3))
            path = name(label, i)
            path.parent.mkdir(parents=True, exist_ok=True)
            draw(shape, (150, 150), fill, rng).save(path, quality=90)


def _catsdogs(out: Path, n: int, rng: np.random.Generator) -> Path:
    root = out / "cats_and_dogs_filtered"
    train = int(n * 2 / 3) // 2  # the real set: 1000 + 1000 train, 500 + 500 validation

    def name(label: str, i: int) -> Path:
        split = "train" if i < train else "validation"
        return root / split / f"{label}s" / f"{label}.{i}.jpg"

    _two_class(root, n // 2, rng, name)
    return root


def _dogsvscats(out: Path, n: int, rng: np.random.Generator) -> Path:
    _two_class(out, n // 2, rng, lambda label, i: out / "train" / f"{label}.{i}.jpg")
    return out / "train"


def _folder(out: Path, n: int, rng: np.random.Generator) -> Path:
    root = out / "car_frog_lizard"
    classes = {"car": ("rectangle", (200, 40, 40)), "frog": ("ellipse", (40, 170, 60)),
               "lizard": ("diamond", (150, 120, 40))}
    per_class = n // 3  # the real set: 10 train, 10 val, 5 test per class
    for label, (shape, fill) in classes.items():
        for i in range(per_class):
            split = "train" if i < per_class * 0.4 else "val" if i < per_class * 0.8 else "test"
            path = root / split / label / f"{label}_{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            draw(shape, (100, 100), fill, rng).save(path)
    return root


def _mnist(out: Path, n: int, rng: np.random.Generator) -> Path:
    """Real handwriting (scikit-learn's digits), upscaled to 28x28 with a random shift, in MNIST's IDX format."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    picks = rng.integers(len(digits.target), size=n)
    images = np.zeros((n, 28, 28), np.uint8)
    for row, index in enumerate(picks):
        small = Image.fromarray(np.round(digits.images[index] * 255 / 16).astype(np.uint8), "L")
        dx, dy = rng.integers(0, 9, size=2)
        images[row, dy:dy + 20, dx:dx + 20] = np.asarray(small.resize((20, 20), Image.Resampling.BILINEAR))
    labels = digits.target[picks].astype(np.uint8)
    test = n // 7  # 60k / 10k in the real set
    for prefix, part in (("train", slice(test, None)), ("t10k", slice(0, test))):
        _write_idx(out / f"{prefix}-images-idx3-ubyte.gz", 0x0803, images[part])
        _write_idx(out / f"{prefix}-labels-idx1-ubyte.gz", 0x0801, labels[part])
    return out


def _write_idx(path: Path, magic: int, values: np.ndarray) -> None:
    with gzip.open(path, "wb") as out:
        out.write(struct.pack(">I", magic) + struct.pack(f">{values.ndim}I", *values.shape))
        out.write(values.tobytes())
