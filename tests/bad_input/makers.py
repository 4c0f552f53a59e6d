"""What the bad-input cases need in their workspaces: datasets in the real layouts (some broken on purpose),
tables, archives served from a file:// URL, a pickled weights file, other earlier runs and shards. Each maker
writes into the workspace it is given and may return `{name}` values for the job and the message."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import struct
import tarfile
import zipfile
import zlib
from pathlib import Path
from typing import Callable

from tests.bad_input.workspace import class_folders, copy_shards, image, run_folder

HEADER = ("id", "gender", "articleType", "baseColour")
ROWS = [["0", "Men", "Shirts", "Blue"], ["1", "Women", "Shirts", "Red"], ["2", "Men", "Jeans", "Blue"]]


def class_folders_at(relative: str, classes: tuple[str, ...] = ("car", "frog", "lizard")) -> Callable[[Path], None]:
    """`<relative>/<class>/*.png`, 4 images per class."""
    def make(ws: Path) -> None:
        class_folders(ws / relative, classes)
    return make


def misspelt_val_folder(ws: Path) -> None:
    """Split folders train/, val/, test/ where val/ spells one class `lizzard`."""
    class_folders(ws / "data/cfl/train")
    class_folders(ws / "data/cfl/val", ("car", "frog", "lizzard"), per_class=2)
    class_folders(ws / "data/cfl/test", per_class=2)


def empty_val_folder(ws: Path) -> None:
    """A train/ folder with images and a val/ folder whose class folder is empty."""
    class_folders(ws / "data/cfl/train")
    (ws / "data/cfl/val/car").mkdir(parents=True)


def a_zip_file(ws: Path) -> None:
    """`data/cfl.zip`: an archive where a folder is expected."""
    (ws / "data").mkdir()
    zip_with({})(ws / "data/cfl.zip")


def empty_folder(relative: str) -> Callable[[Path], None]:
    """An empty folder at `relative`."""
    def make(ws: Path) -> None:
        (ws / relative).mkdir(parents=True)
    return make


def table(rows: list[list[str]] = ROWS, header: tuple[str, ...] = HEADER) -> Callable[[Path], None]:
    """`data/fashion/styles.csv` with `rows` (`{ws}` in a value is the workspace) and images/0-2.png; and
    `secret.png`, outside the table's folder."""
    def make(ws: Path) -> None:
        folder = ws / "data/fashion"
        for i in range(3):
            image(folder / "images" / f"{i}.png")
        image(ws / "secret.png")
        out = io.StringIO()
        csv.writer(out).writerows([list(header), *([value.replace("{ws}", str(ws)) for value in row]
                                                   for row in rows)])
        (folder / "styles.csv").write_text(out.getvalue())
    return make


def lfs_pointers(ws: Path) -> None:
    """Class folders whose 9 images are all Git LFS pointer files (a clone without `git lfs pull`)."""
    for path in class_folders(ws / "data/cfl", per_class=3).rglob("*.png"):
        path.write_text("version https://git-lfs.github.com/spec/v1\n")  # a Git LFS pointer, not the image


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims a huge size."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 10))
            + chunk(b"IEND", b""))


def photo_named_yaml(ws: Path) -> None:
    """A PNG saved as `photo.yaml`."""
    (ws / "photo.yaml").write_bytes(_png_claiming(8, 8))


def images_with_a_bomb(ws: Path) -> None:
    """Class folders with one PNG claiming 40,000 x 40,000 pixels."""
    class_folders(ws / "data/cfl", per_class=3)
    (ws / "data/cfl/car/bomb.png").write_bytes(_png_claiming(40_000, 40_000))


def unmatched_photos(ws: Path) -> None:
    """Photos named `IMG_<n>.png`: no class in their names."""
    for i in range(3):
        image(ws / f"data/photos/IMG_{i}.png")


def zip_with(members: dict[str, str]) -> Callable[[Path], None]:
    """A zip writer: one image, plus `members` (name -> text) named exactly as given."""
    def write(archive: Path) -> None:
        with zipfile.ZipFile(archive, "w") as zipped:
            zipped.writestr("cfl/car/a.png", b"not read")
            for name, text in members.items():
                zipped.writestr(zipfile.ZipInfo(name), text)
    return write


def tar_with(kind: bytes, name: str, target: str) -> Callable[[Path], None]:
    """A tar.gz writer: one image, plus a member `name` of tar type `kind` (a link to `target`, a pipe)."""
    def write(archive: Path) -> None:
        with tarfile.open(archive, "w:gz") as tarred:
            info = tarfile.TarInfo("cfl/car/a.png")
            info.size = 4
            tarred.addfile(info, io.BytesIO(b"data"))
            member = tarfile.TarInfo(name)
            member.type, member.linkname = kind, target
            tarred.addfile(member)
    return write


def served(name: str, write: Callable[[Path], None]) -> Callable[[Path], dict]:
    """An archive at `ws/www/<name>`, downloaded from its file:// URL (`{url}`), with its SHA-256 (`{sha}`)."""
    def make(ws: Path) -> dict[str, str]:
        archive = ws / "www" / name
        archive.parent.mkdir(parents=True)
        write(archive)
        return {"url": archive.as_uri(), "sha": hashlib.sha256(archive.read_bytes()).hexdigest()}
    return make


def download_source(url: str = "{url}", sha: str = "{sha}") -> dict:
    """The job change: an image_folder source fetched from `url`, checked against `sha`."""
    return {"data.source": {"type": "image_folder", "path": "cfl", "download": {"url": url, "sha256": sha}}}


class _Pwn:
    """Unpickling this creates the file PWNED: what a malicious `.pt` file could do, harmlessly."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def pickled_weights(ws: Path) -> None:
    """`weights/model.pt`: a torch.save of an object that is not a tensor (`_Pwn`)."""
    import torch

    (ws / "weights").mkdir()
    torch.save({"backbone.0.weight": _Pwn(ws / "PWNED")}, ws / "weights/model.pt")


def other_run(name: str, files: tuple[str, ...], **changes) -> Callable[[Path], None]:
    """Another earlier run of the digits job, `runs/digits_lenet/<name>/`, holding `files`."""
    def make(ws: Path) -> None:
        run_folder(ws / "runs/digits_lenet" / name, files, **changes)
    return make


def run_with_a_corrupt_summary(ws: Path) -> None:
    """Another earlier run whose summary.json was cut short."""
    other_run("20260101-000000-0002", ("job.yaml",))(ws)
    (ws / "runs/digits_lenet/20260101-000000-0002/summary.json").write_text('{"status": "succ')


def search_run(ws: Path) -> None:
    """An interrupted search's run folder, `runs/arch_search/<id>/`."""
    folder = ws / "runs/arch_search/20260101-000000-0003"
    run_folder(folder, ("job.yaml",))
    (folder / "summary.json").write_text(json.dumps({
        "schema_version": 2, "kind": "tune", "job": "arch_search", "run_id": folder.name, "run_dir": str(folder),
        "status": "interrupted", "started": "2026-01-01T00:00:00", "monitor": "val/acc", "mode": "max", "epochs": 10,
        "scheduler": "asha", "trials": 4, "space": {"model.arch": {"choice": ["lenet5", "bn_cnn"]}}}))


def shards(edit: Callable[[dict], None] | None = None) -> Callable[[Path], None]:
    """cnnjobs shards at `data/shards`, their dataset.json changed by `edit`."""
    def make(ws: Path) -> None:
        folder = copy_shards(ws)
        if edit is not None:
            manifest = json.loads((folder / "dataset.json").read_text())
            edit(manifest)
            (folder / "dataset.json").write_text(json.dumps(manifest))
    return make
