"""Readers of the datasets users bring, each turning a `data.source` into a list of labelled examples.

A reader lists examples without decoding pixels (so listing 100k files is cheap); pixels are loaded one example at
a time while the shards are written, possibly in another process, so an example's `load` is a small picklable
object rather than a closure over big arrays. What a reader cannot use (a malformed CSV row, a file whose name
does not match, an empty class folder) it lists in `skipped` with the reason, instead of failing the whole job.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import json
import logging
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from cnnjobs.data.idx import IdxImage, read_mnist
from cnnjobs.errors import JobError
from cnnjobs.spec import BuiltinSource, CsvSource, DataSpec, FilenameSource, ImageFolderSource, MnistSource

log = logging.getLogger("cnnjobs")
SPLITS = ("train", "val", "test")
SPLIT_FOLDERS = {"train": "train", "val": "val", "validation": "val", "test": "test"}
_IGNORED = {"Thumbs.db", "desktop.ini"}


@dataclass(frozen=True)
class Example:
    """One image: where it comes from, its label index per task, and its split when the source fixes one."""

    ref: str
    labels: dict[str, int]
    load: Callable[[], Image.Image] = field(repr=False, compare=False)
    split: str | None = None


@dataclass(frozen=True)
class SourceData:
    """What a reader found: class names per task, the examples, a fingerprint of the source files, and what it
    had to leave out as (ref, reason)."""

    tasks: dict[str, list[str]]
    examples: list[Example]
    fingerprint: str
    skipped: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class ImageFile:
    """Loads an image file (picklable, unlike a lambda over a path)."""

    path: str

    def __call__(self) -> Image.Image:
        return Image.open(self.path)


@dataclass(frozen=True)
class ArrayImage:
    """One grayscale image of a small in-memory array (the built-in digits)."""

    pixels: np.ndarray
    index: int

    def __call__(self) -> Image.Image:
        return Image.fromarray(self.pixels[self.index], mode="L")


def read_source(spec: DataSpec) -> SourceData:
    """List the examples of `spec.source`."""
    readers: dict[type, Callable[[DataSpec], SourceData]] = {
        BuiltinSource: _read_builtin, ImageFolderSource: _read_image_folder, CsvSource: _read_csv,
        FilenameSource: _read_filenames, MnistSource: _read_mnist}
    return readers[type(spec.source)](spec)


def source_root(spec: DataSpec, folder: bool = True) -> Path:
    """The local path `data.source.path` names, after fetching and extracting `download` if there is one: a
    folder, or a file when `folder` is false (a csv table)."""
    source = spec.source
    if getattr(source, "download", None) is not None:
        from cnnjobs.data.download import DownloadFailed, fetch

        try:
            path = fetch(source.download, spec.cache_dir) / source.path
        except DownloadFailed as exc:
            raise JobError(f"{exc}{hint_of(source)}") from None
    else:
        path = Path(os.path.expanduser(source.path))
    if not path.exists():
        raise JobError(f"data.source.path: {path} does not exist{hint_of(source)}")
    if folder and not path.is_dir():
        archive = path.name.endswith((".zip", ".tar", ".tar.gz", ".tgz"))
        raise JobError(f"data.source.path: {path} is a file; type {source.type} reads a folder"
                       + ("; extract the archive, or name it in data.source.download" if archive else ""))
    if not folder and path.is_dir():
        tables = sorted(p.name for p in path.glob("*.csv"))
        raise JobError(f"data.source.path: {path} is a folder; a csv source reads the table file"
                       + (f", e.g. {path / tables[0]}" if tables else ""))
    return path


def hint_of(source: object) -> str:
    """`; <data.source.hint>` when the job says how to get its data, else nothing."""
    hint = getattr(source, "hint", None)
    return f"; {' '.join(hint.split())}" if hint else ""


def _read_builtin(spec: DataSpec) -> SourceData:
    """scikit-learn's digits: 1,797 real 8x8 scans (values 0-16), one task `digit` with classes 0-9."""
    images, target, version = _digits()
    pixels = np.round(images * (255 / 16)).astype(np.uint8)
    examples = [Example(f"digits[{i}]", {"digit": int(y)}, ArrayImage(pixels, i)) for i, y in enumerate(target)]
    fingerprint = hashlib.sha256(pixels.tobytes() + target.tobytes()).hexdigest()[:16]
    return SourceData({"digit": [str(c) for c in range(10)]}, examples,
                      json.dumps({"sklearn": version, "data": fingerprint}))


def _digits() -> tuple[np.ndarray, np.ndarray, str]:
    """The digits' images (N, 8, 8) float, targets int64 and scikit-learn's version. Read straight from the CSV
    that `load_digits` reads (the same values), because importing scikit-learn costs ~2 s of every submit."""
    from importlib.metadata import version
    from importlib.util import find_spec

    found = find_spec("sklearn")  # finds the package without importing it
    table = os.path.join((found.submodule_search_locations or [""])[0], "datasets", "data", "digits.csv.gz") \
        if found else ""
    if not os.path.isfile(table):  # a scikit-learn that keeps its data elsewhere
        from sklearn.datasets import load_digits

        digits = load_digits()
        return digits.images, digits.target, version("scikit-learn")
    data = np.loadtxt(table, delimiter=",")
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(np.int64), version("scikit-learn")


def _files(folder: Path) -> list[Path]:
    """Regular files under `folder`, sorted, without hidden files and OS clutter."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".") and p.name not in _IGNORED
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _fingerprint(paths: list[Path], extra: object = None) -> str:
    """Changes when a file is added, removed, resized or touched (no need to hash the contents)."""
    digest = hashlib.sha256(json.dumps(extra, default=str).encode())
    for path in paths:
        stat = path.stat()
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def quick_fingerprint(spec: DataSpec) -> str | None:
    """A fingerprint of the source that reads its folders but no file's metadata: every folder's path and time of
    last change under the source (a file added, removed or renamed changes its folder's), and a CSV table's size and
    time. Cheap where the full fingerprint (`_fingerprint`: a `stat` of every file) is not: one `stat` per folder
    instead of one per file. None for sources whose full listing is as cheap (the built-in digits, MNIST's four
    files)."""
    source = spec.source
    if isinstance(source, (BuiltinSource, MnistSource)):
        return None
    table = source_root(spec, folder=False) if isinstance(source, CsvSource) else None
    root = table.parent if table is not None else source_root(spec)
    digest = hashlib.sha256(json.dumps({"root": str(root), "table": _stat_key(table)}).encode())
    folders = [root]
    while folders:
        folder = folders.pop()
        digest.update(f"{folder}\0{folder.stat().st_mtime_ns}\n".encode())
        with os.scandir(folder) as entries:  # names and types only: no stat of the files
            folders += sorted((Path(entry.path) for entry in entries
                               if entry.is_dir() and not entry.name.startswith(".")), reverse=True)
    return "quick:" + digest.hexdigest()[:16]


def _stat_key(path: Path | None) -> list[int] | None:
    if path is None:
        return None
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def _read_image_folder(spec: DataSpec) -> SourceData:
    """`<class>/<image>` under the root, or under split folders `train/`, `val/` (or `validation/`), `test/`."""
    source: ImageFolderSource = spec.source
    root = source_root(spec)
    folders = _subfolders(root)
    split_folders = [f for f in folders if f.name.lower() in SPLIT_FOLDERS]
    layout = [(f, SPLIT_FOLDERS[f.name.lower()]) for f in split_folders] if split_folders else [(root, None)]
    found: dict[str, list[tuple[Path, str | None]]] = {}
    per_split: dict[Path, set[str]] = {}
    for folder, split in layout:
        classes = _subfolders(folder)
        if not classes:
            raise JobError(f"data.source.path: {folder} has no class subfolders (expected {folder}/<class>/<image>)")
        if split and not any(_files(c) for c in classes):
            raise JobError(f"data.source.path: the {split} split folder {folder} has no images")
        for class_folder in classes:
            files = _files(class_folder)
            found.setdefault(class_folder.name, []).extend((p, split) for p in files)
            if files:
                per_split.setdefault(folder, set()).add(class_folder.name)
    if split_folders:
        _check_split_classes(per_split)
    skipped = [(str(root / name), "class folder has no images") for name, files in found.items() if not files]
    names = sorted(name for name, files in found.items() if files)
    examples = [Example(str(path), {source.task: index}, ImageFile(str(path)), split)
                for index, name in enumerate(names) for path, split in found[name]]
    return SourceData({source.task: names}, examples, _fingerprint([Path(e.ref) for e in examples]), skipped)


def _check_split_classes(per_split: dict[Path, set[str]]) -> None:
    """Split folders against the train folder. A class with val or test images but no train images cannot be
    learnt (most often a misspelt folder, `val/lizzard`): refused, with the train class it is probably meant to
    be. A class missing from val or test is accepted with a warning: its metrics there are left out."""
    train = next((names for folder, names in per_split.items() if SPLIT_FOLDERS[folder.name.lower()] == "train"), None)
    if train is None:
        return  # no train folder: refused later, as an empty train split
    for folder, names in per_split.items():
        split, unknown = SPLIT_FOLDERS[folder.name.lower()], sorted(names - train)
        if unknown:
            close = difflib.get_close_matches(unknown[0], sorted(train - names), n=1)
            raise JobError(f"data.source.path: class {unknown[0]!r} has images in the {split} split folder {folder} "
                           "but none in train" + (f" (which has {close[0]!r}: misspelt?)" if close else "")
                           + "; a class must be trained on")
        if train - names:
            log.warning("data.source.path: the %s split folder %s has no images of %s; its %s metrics leave them out",
                        split, folder, ", ".join(map(repr, sorted(train - names))), split)


def _read_filenames(spec: DataSpec) -> SourceData:
    """A folder of images named after their class: the `label` group of `pattern` in each file name."""
    source: FilenameSource = spec.source
    root = source_root(spec)
    pattern = re.compile(source.pattern)
    labelled, skipped = [], []
    for path in _files(root):
        match = pattern.search(path.name)
        if match and match.group("label"):
            labelled.append((path, match.group("label")))
        else:
            skipped.append((str(path), f"file name does not match data.source.pattern {source.pattern!r}"))
    if not labelled:
        raise JobError(f"data.source.pattern: no file name under {root} matches {source.pattern!r}")
    names = sorted({label for _, label in labelled})
    index = {name: i for i, name in enumerate(names)}
    examples = [Example(str(path), {source.task: index[label]}, ImageFile(str(path))) for path, label in labelled]
    return SourceData({source.task: names}, examples, _fingerprint([p for p, _ in labelled]), skipped)


def _read_csv(spec: DataSpec) -> SourceData:
    """One row per image; `images` is a path template filled from the row; each `labels` column becomes a task."""
    source: CsvSource = spec.source
    table = source_root(spec, folder=False)
    rows, skipped = csv_rows(table, source)
    if source.keep_mode or source.keep_size:
        rows, filtered = _keep_matching(rows, source)
        skipped += filtered
    rows, rare = _drop_rare(rows, source.labels, source.min_count)
    skipped += rare
    if not rows:
        first = f"; first: {skipped[0][0]}: {skipped[0][1]}" if skipped else ""
        raise JobError(f"data.source.path: {table}: no usable rows ({len(skipped)} skipped{first})")
    tasks = {column: sorted({row[column] for _, row in rows}) for column in source.labels}
    index = {column: {name: i for i, name in enumerate(names)} for column, names in tasks.items()}
    examples = [Example(str(image), {c: index[c][row[c]] for c in source.labels}, ImageFile(str(image)))
                for image, row in rows]
    fingerprint = _fingerprint([table, *(image for image, _ in rows)])
    return SourceData(tasks, examples, fingerprint, skipped)


def csv_rows(table: Path, source: CsvSource) -> tuple[list[tuple[Path, dict[str, str]]], list[tuple[str, str]]]:
    """The rows that have as many fields as the header, non-empty labels and an existing image file under the
    table's folder (a row's values never lead elsewhere: a downloaded table is data, not instructions)."""
    rows, skipped = [], []
    root = Path(os.path.normpath(table.parent))
    with open(table, newline="", encoding="utf-8", errors="replace") as handle:
        reader = csv.reader(handle)
        header = [name.strip() for name in next(reader, [])]
        missing = [column for column in source.labels if column not in header]
        if missing:
            raise JobError(f"data.source.labels: {table} has no column {missing[0]!r} (columns: {', '.join(header)})")
        for row in reader:
            where = f"{table}:{reader.line_num}"
            if not row:
                continue
            if len(row) != len(header):  # e.g. an unquoted comma in styles.csv's productDisplayName
                skipped.append((where, f"malformed row: {len(row)} fields, the header has {len(header)}"))
                continue
            values = {name: value.strip() for name, value in zip(header, row)}
            empty = [column for column in source.labels if not values[column]]
            if empty:
                skipped.append((where, f"empty label in column {empty[0]!r}"))
                continue
            try:
                image = Path(os.path.normpath(table.parent / source.images.format(**values)))
            except (KeyError, IndexError, ValueError) as exc:
                raise JobError(f"data.source.images: {source.images!r} names a column {exc} that {table} "
                               f"does not have (columns: {', '.join(header)})") from None
            if root not in image.parents:  # a value such as ../../x or /etc/x
                skipped.append((where, f"image path {image} is outside the table's folder {root}"))
                continue
            if not image.is_file():
                skipped.append((where, f"image file not found: {image}"))
                continue
            rows.append((image, values))
    return rows, skipped


def _keep_matching(rows: list[tuple[Path, dict[str, str]]], source: CsvSource):
    """Keep rows whose image has the wanted mode and size; only the image header is read."""
    kept, skipped = [], []
    for image, values in rows:
        try:
            with Image.open(image) as opened:
                mode, size = opened.mode, opened.size
        except Exception as exc:  # noqa: BLE001 - any unreadable image is skipped, named, and counted
            skipped.append((str(image), f"cannot read image: {exc}"))
            continue
        if source.keep_mode and mode != source.keep_mode:
            skipped.append((str(image), f"filtered out: mode {mode}, data.source.keep_mode is {source.keep_mode}"))
        elif source.keep_size and size != tuple(source.keep_size):
            skipped.append((str(image), f"filtered out: size {size[0]}x{size[1]}, data.source.keep_size is "
                                        f"{source.keep_size[0]}x{source.keep_size[1]}"))
        else:
            kept.append((image, values))
    return kept, skipped


def _drop_rare(rows: list[tuple[Path, dict[str, str]]], columns: list[str], min_count: int):
    """Drop rows with a class rarer than `min_count` in any column, until every remaining class is common enough."""
    skipped: list[tuple[str, str]] = []
    while min_count > 1:
        counts = {column: Counter(values[column] for _, values in rows) for column in columns}
        rare = [(image, values) for image, values in rows
                if any(counts[c][values[c]] < min_count for c in columns)]
        if not rare:
            break
        for image, values in rare:
            column = next(c for c in columns if counts[c][values[c]] < min_count)
            skipped.append((str(image), f"class {values[column]!r} of {column!r} has fewer than "
                                        f"data.source.min_count={min_count} images"))
        dropped = {id(values) for _, values in rare}
        rows = [(image, values) for image, values in rows if id(values) not in dropped]
    return rows, skipped


def _read_mnist(spec: DataSpec) -> SourceData:
    """The four MNIST IDX files: `t10k-*` is the test split, `train-*` is split into train and val."""
    root = source_root(spec)
    parts, files = read_mnist(root)
    examples = [Example(f"{Path(images).name}[{i}]", {"digit": int(label)}, IdxImage(images, i),
                        "test" if split == "test" else None)
                for split, (images, labels) in parts.items() for i, label in enumerate(labels)]
    return SourceData({"digit": [str(c) for c in range(10)]}, examples, _fingerprint(files))


def assign_splits(examples: list[Example], val: float, test: float, seed: int,
                  stratify_task: str) -> dict[str, list[Example]]:
    """Split examples that carry no split of their own, per class of `stratify_task`, reproducibly for `seed`.

    Each class keeps round(n * fraction) examples in val and test (at least one when the class has three or more
    and the fraction is non-zero), so small classes are represented in every split. A split the source provides
    itself (e.g. a `test/` folder, MNIST's t10k files) is not carved out of the others. Each split comes back
    in a seeded random order.
    """
    out: dict[str, list[Example]] = {name: [] for name in SPLITS}
    unassigned: dict[int, list[Example]] = {}
    for example in examples:
        if example.split is not None:
            out[example.split].append(example)
        else:
            unassigned.setdefault(example.labels[stratify_task], []).append(example)
    val, test = (0.0 if out[name] else fraction for name, fraction in (("val", val), ("test", test)))
    rng = np.random.default_rng(seed)
    for label in sorted(unassigned):
        group = unassigned[label]
        order = rng.permutation(len(group))
        n_val, n_test = (_held_out(len(group), fraction) for fraction in (val, test))
        out["val"] += [group[i] for i in order[:n_val]]
        out["test"] += [group[i] for i in order[n_val:n_val + n_test]]
        out["train"] += [group[i] for i in order[n_val + n_test:]]
    # Mix the classes: shards are read in order and the workers' shuffle buffer only mixes nearby images.
    return {split: [group[i] for i in rng.permutation(len(group))] for split, group in out.items()}


def _held_out(n: int, fraction: float) -> int:
    if fraction == 0:
        return 0
    return max(int(round(n * fraction)), 1 if n >= 3 else 0)
