"""Every seed job file runs end to end on its synthetic stand-in, in the real layout (one short epoch each)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from cnnjobs.data import shards
from cnnjobs.data.synth import synth
from cnnjobs.run import layout
from cnnjobs.spec import load_job
from cnnjobs.train.runner import submit
from tests.conftest import seeded_job, stand_in

pytestmark = pytest.mark.slow

JOBS = {  # job file -> (stand-in, its size, overrides that keep the run short)
    "catsdogs_small_cnn": ("catsdogs", 60, ["data.source.download=null", "data.image_size=48"]),
    "mnist_lenet": ("mnist", 300, []),
    "fashion_multi": ("fashion", 300, ["data.source.min_count=2", "train.batch_size=32",
                                       "train.validate_every=1", "train.checkpoint_every=1"]),
    "cfl_folder": ("folder", 30, ["data.image_size=32"]),
    "dogs_vs_cats_filenames": ("dogsvscats", 60, ["data.image_size=48"]),
}


@pytest.mark.parametrize("name", list(JOBS))
def test_seed_job_runs_on_its_stand_in(name, ray_cluster, tmp_path, cache_dir):
    kind, size, overrides = JOBS[name]
    path = stand_in(kind, tmp_path / "data", n=size)
    job = seeded_job(f"jobs/{name}.yaml", f"data.source.path={path}", f"data.cache_dir={cache_dir}",
                     f"output.dir={tmp_path / 'runs'}", "train.epochs=1", "scaling.use_gpu=false", *overrides)
    result = submit(job)
    summary = result.summary
    assert summary.status == "succeeded"
    assert 0 <= summary.metrics["val"].acc <= 1
    expected_tasks = {"fashion_multi": {"gender", "articleType", "baseColour"}, "mnist_lenet": {"digit"}}
    assert set(summary.data.tasks) == expected_tasks.get(name, {"label"})
    skipped = Path(result.run_dir) / "skipped.csv"
    if name == "fashion_multi":  # malformed rows and filtered images are listed with their reason
        rows = list(csv.DictReader(open(skipped)))
        assert summary.data.skipped == len(rows) > 0
        assert any(row["reason"].startswith("malformed row") for row in rows)
    else:
        assert summary.data.skipped == 0 and not skipped.exists()
    # Every picture of the run is an image with something in it. Seeds 000, 002 and 004 have no test split (000's
    # folders are train/ and validation/), so their confusion matrices and prediction grids are on validation.
    assert summary.evaluated == ("test" if name in ("mnist_lenet", "cfl_folder") else "val")
    pictures = [layout.CURVES, layout.PREDICTIONS, *[layout.confusion_png(task) for task in summary.data.tasks]]
    if job.data.augment is not None:
        pictures.append(layout.AUGMENTED)
    for name_ in pictures:
        assert_picture(Path(result.run_dir) / name_)
    assert list((Path(result.run_dir) / layout.TENSORBOARD).glob("events.out.tfevents*"))


def assert_picture(path: Path) -> None:
    """A PNG that decodes and is not blank: its pixels vary."""
    with Image.open(path) as image:
        assert image.format == "PNG" and min(image.size) > 200, path
        assert np.asarray(image.convert("L"), dtype=np.float32).std() > 10, f"{path} is blank"


def test_parallel_shards_equal_serial_ones(ray_cluster, tmp_path, monkeypatch):
    table = synth("fashion", tmp_path / "f", n=700)
    job = load_job("jobs/fashion_multi.yaml", [f"data.source.path={table}", "data.source.min_count=1",
                                               f"data.cache_dir={tmp_path / 'ray'}"])
    on_ray, _ = shards.prepare(job.data)
    assert len(on_ray.files["train"]) > 1  # several chunks, written by Ray tasks
    monkeypatch.setattr(shards.ray, "is_initialized", lambda: False)
    serial, _ = shards.prepare(job.data.model_copy(update={"cache_dir": str(tmp_path / "serial")}))
    assert serial.counts == on_ray.counts and serial.mean == pytest.approx(on_ray.mean)
    for split in ("train", "val"):
        read = lambda manifest, split=split: [row for path in manifest.paths(split)
                                              for row in pq.read_table(path).to_pylist()]
        assert read(serial) == read(on_ray)
