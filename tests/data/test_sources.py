"""Each real layout is read as it is: split folders, one folder split by class, CSV tables, file names, MNIST IDX,
and shards written earlier."""

from __future__ import annotations

import gzip
import shutil
from collections import Counter

import pyarrow.parquet as pq
import pytest

from cnnjobs.data.shards import prepare
from cnnjobs.data.sources import read_source
from cnnjobs.data.synth import synth
from cnnjobs.errors import JobError
from tests.data.helpers import class_folders, image, spec


def test_split_folders_keep_their_split_and_validation_means_val(tmp_path):
    for split in ("train", "validation", "test"):
        class_folders(tmp_path / "d" / split, per_class=3)
    manifest, _ = prepare(spec({"type": "image_folder", "path": str(tmp_path / "d")}, tmp_path / "cache"))
    assert manifest.tasks == {"label": ["cat", "dog"]}
    assert {s: manifest.counts[s]["label"] for s in ("train", "val", "test")} == {
        "train": [3, 3], "val": [3, 3], "test": [3, 3]}


def val_refs(manifest) -> list[str]:
    return sorted(ref for path in manifest.paths("val") for ref in pq.read_table(path).column("ref").to_pylist())


def test_one_folder_of_classes_is_split_seeded_and_stratified(tmp_path):
    class_folders(tmp_path / "d", per_class=20)
    source = {"type": "image_folder", "path": str(tmp_path / "d")}
    one, _ = prepare(spec(source, tmp_path / "c1", split={"val": 0.2, "test": 0.1}, seed=3))
    assert one.counts["val"]["label"] == [4, 4] and one.counts["test"]["label"] == [2, 2]
    again, _ = prepare(spec(source, tmp_path / "c2", split={"val": 0.2, "test": 0.1}, seed=3))
    other, _ = prepare(spec(source, tmp_path / "c3", split={"val": 0.2, "test": 0.1}, seed=4))
    assert val_refs(one) == val_refs(again) and val_refs(one) != val_refs(other)


def test_fashion_csv_three_tasks_stray_commas_filters_and_min_count(tmp_path):
    table = synth("fashion", tmp_path / "f", n=300)
    with open(table, "a") as out:  # an empty label and a row whose image is missing
        out.write("99998,,Apparel,Topwear,Tshirts,Red,Summer,2012,Casual,x\n")
        out.write("99999,Men,Apparel,Topwear,Tshirts,Red,Summer,2012,Casual,y\n")
        out.write("99997,Men,Apparel,Topwear,Kurtas,Red,Summer,2012,Casual,rare\n")
    image(table.parent / "images" / "99997.jpg", size=(60, 80))
    source = {"type": "csv", "path": str(table), "images": "images/{id}.jpg",
              "labels": ["gender", "articleType", "baseColour"], "keep_mode": "RGB", "keep_size": [60, 80],
              "min_count": 2}
    data = read_source(spec(source, tmp_path / "cache"))
    reasons = Counter(reason.split(":")[0].split(" ")[0] for _, reason in data.skipped)
    assert reasons["malformed"] == 3  # rows 11, 112, 213 carry an unquoted comma, as in the real styles.csv
    assert reasons["empty"] == 1 and reasons["image"] == 1
    odd = {i for i in range(300) if i % 97 == 5 or i % 89 == 7}  # the stand-in's grayscale and odd-sized images
    assert reasons["filtered"] == len(odd) == 8
    assert any("min_count" in reason and "Kurtas" in reason for _, reason in data.skipped)
    assert set(data.tasks) == {"gender", "articleType", "baseColour"} and "Kurtas" not in data.tasks["articleType"]
    assert len(data.examples) == 300 - 3 - 8


def test_csv_errors_name_the_column(tmp_path):
    table = synth("fashion", tmp_path / "f", n=20)
    bad_label = {"type": "csv", "path": str(table), "images": "images/{id}.jpg", "labels": ["colour"]}
    with pytest.raises(JobError, match="no column 'colour'.*baseColour"):
        read_source(spec(bad_label, tmp_path))
    bad_template = {**bad_label, "labels": ["gender"], "images": "images/{image_id}.jpg"}
    with pytest.raises(JobError, match="data.source.images.*image_id"):
        read_source(spec(bad_template, tmp_path))


def test_labels_from_file_names(tmp_path):
    root = synth("dogsvscats", tmp_path / "k", n=20)
    image(root / "notes.png")  # matches no class pattern
    source = {"type": "filenames", "path": str(root), "pattern": r"^(?P<label>cat|dog)\.\d+\."}
    data = read_source(spec(source, tmp_path))
    assert data.tasks == {"label": ["cat", "dog"]} and len(data.examples) == 20
    assert data.skipped == [(str(root / "notes.png"), f"file name does not match data.source.pattern "
                                                      f"{source['pattern']!r}")]
    with pytest.raises(ValueError, match="named group"):
        spec({**source, "pattern": "cat"}, tmp_path)


@pytest.mark.parametrize("gzipped", [True, False])
def test_mnist_idx_files_gzipped_or_not(tmp_path, gzipped):
    root = synth("mnist", tmp_path / "m", n=140)
    if not gzipped:
        for path in root.glob("*.gz"):
            with gzip.open(path) as packed, open(path.with_suffix(""), "wb") as out:
                shutil.copyfileobj(packed, out)
            path.unlink()
    manifest, _ = prepare(spec({"type": "mnist", "path": str(root)}, tmp_path / "c", channels=1, image_size=28,
                               split={"val": 0.2, "test": 0.3}))
    assert manifest.num_rows("test") == 20  # the t10k files, not a fraction of train
    assert manifest.num_rows("train") + manifest.num_rows("val") == 120 and manifest.num_rows("val") >= 20
    (root / next(p.name for p in root.iterdir() if p.name.startswith("t10k-labels"))).unlink()
    with pytest.raises(JobError, match="t10k-labels-idx1-ubyte"):
        read_source(spec({"type": "mnist", "path": str(root)}, tmp_path))


def test_parquet_shards_are_reused_and_must_match_the_image_size(tmp_path):
    class_folders(tmp_path / "d")
    written, cached = prepare(spec({"type": "image_folder", "path": str(tmp_path / "d")}, tmp_path / "c"))
    assert not cached
    reused, cached = prepare(spec({"type": "parquet", "path": written.location}, tmp_path / "other"))
    assert cached and reused.tasks == written.tasks and reused.counts == written.counts
    with pytest.raises(JobError, match=r"hold 16x16 images.*data.image_size: \[16, 16\]"):
        prepare(spec({"type": "parquet", "path": written.location}, tmp_path, image_size=32))
    with pytest.raises(JobError, match="holds no cnnjobs shards"):
        prepare(spec({"type": "parquet", "path": str(tmp_path / "d")}, tmp_path))


def test_the_builtin_digits_are_scikit_learns_without_importing_it():
    """The digits are read from scikit-learn's own CSV (importing scikit-learn costs seconds of every submit); the
    values, and so the shards' cache key, are those of `load_digits`."""
    import subprocess
    import sys

    import numpy as np
    from sklearn.datasets import load_digits

    from cnnjobs.data.sources import _digits

    images, target, _ = _digits()
    digits = load_digits()
    assert np.array_equal(images, digits.images) and np.array_equal(target, digits.target)
    probe = "import sys; from cnnjobs.data.sources import _digits; _digits(); print('sklearn' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip() == "False"
