"""`cnnjobs predict`: agrees with the run's own test evaluation, the Ray Data path with the in-process one,
labeled folders and CSV tables are scored, unreadable files are listed and skipped."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

from cnnjobs.cli import main
from cnnjobs.results.predict import predict
from cnnjobs.results.trained import load_trained
from cnnjobs.train.runner import submit
from tests.conftest import seeded_job, stand_in
from tests.results.trained_run import make_trained_run


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    return make_trained_run(tmp_path_factory.mktemp("predict"), steps=60)[0]


def digit_folder(root: Path, count: int = 30) -> Path:
    """Real digit scans as PNG files in class subfolders (a labeled folder), plus a file that is not an image."""
    digits = load_digits()
    for i in range(count):
        folder = root / str(digits.target[i])
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((digits.images[i] * 15.9).astype(np.uint8)).save(folder / f"{i}.png")
    (root / "7" / "notes.png").write_text("not an image")
    return root


def test_labeled_folder_is_scored_and_written_out(digits_run, tmp_path, capsys):
    folder = digit_folder(tmp_path / "new")
    out = tmp_path / "preds.csv"
    assert main(["predict", digits_run, str(folder), "--local", "--out", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["mode"] == "in-process" and len(result["predictions"]) == 30
    assert result["skipped"] == [{"path": str(folder / "7" / "notes.png"),
                                  "reason": "not an image or an unsupported format"}]
    # The figures are those of the model itself on the same files.
    trained = load_trained(digits_run)
    rows = list(csv.DictReader(open(out)))
    right = 0
    for row in rows:
        probabilities = trained.probabilities(torch.from_numpy(np.stack([trained.pixels(row["path"])])))["digit"]
        assert row["digit"] == str(int(probabilities.argmax())) and row["digit_true"] == Path(row["path"]).parent.name
        right += row["digit"] == row["digit_true"]
    assert result["accuracy"]["digit"] == pytest.approx(right / 30)
    assert sum(map(sum, result["confusion"]["digit"])) == 30
    assert main(["predict", digits_run, str(folder / "0" / "0.png"), "--local", "--out", str(tmp_path / "p.json")]) == 0
    written = json.loads((tmp_path / "p.json").read_text())
    assert written["accuracy"] == {} and len(written["predictions"][0]["top"]["digit"]) == 3


def test_nothing_to_predict_and_unknown_runs_are_one_line_errors(digits_run, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    for args in (["predict", digits_run, str(tmp_path / "empty")], ["predict", digits_run, str(tmp_path / "no")],
                 ["predict", str(tmp_path / "missing-run"), str(tmp_path)]):
        assert main(args) == 2, args
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("cnnjobs: error: "), err


def test_a_csv_table_in_the_jobs_layout_is_labeled_for_every_task(tmp_path):
    styles = stand_in("fashion", tmp_path / "f", n=80)
    run, _ = make_trained_run(tmp_path, "jobs/fashion_multi.yaml", f"data.source.path={styles}", "model.arch=cfl_cnn",
                              "data.image_size=[40, 30]", "data.source.min_count=1", steps=5)
    result = predict(run, [str(styles)], use_ray=False)
    assert set(result.accuracy) == {"gender", "articleType", "baseColour"}
    assert all(set(row.truth) == set(result.accuracy) for row in result.rows)
    assert result.skipped and all(reason.startswith("malformed row") for _, reason in result.skipped), \
        "rows with stray commas, as in the real styles.csv, are skipped as training skipped them"


@pytest.mark.slow
def test_predict_agrees_with_the_runs_test_evaluation_in_process_and_on_ray_data(ray_cluster, tmp_path, cache_dir):
    root = stand_in("folder", tmp_path / "cfl")  # car_frog_lizard/{train,val,test}/<class>/N.png
    job = seeded_job("jobs/cfl_folder.yaml", f"data.source.path={root}", f"data.cache_dir={cache_dir}",
                     f"output.dir={tmp_path / 'runs'}", "data.image_size=32", "train.epochs=3", "scaling.use_gpu=false")
    summary = submit(job).summary
    test_folder = root / "test"
    (test_folder / "car" / "broken.png").write_bytes(b"\x89PNG broken")
    here = predict(summary.run_dir, [str(test_folder)], use_ray=False)
    assert here.accuracy["label"] == summary.metrics["test"].acc
    assert here.confusion["label"] == summary.confusion["label"] and summary.evaluated == "test"
    on_ray = predict(summary.run_dir, [str(test_folder)], use_ray=True)
    assert on_ray.mode == "ray-data" and [row.path for row in on_ray.rows] == [row.path for row in here.rows]
    for a, b in zip(here.rows, on_ray.rows):
        assert [c for c, _ in a.top["label"]] == [c for c, _ in b.top["label"]]
        assert np.allclose([p for _, p in a.top["label"]], [p for _, p in b.top["label"]], atol=1e-6)
    assert here.skipped == on_ray.skipped == [(str(test_folder / "car" / "broken.png"),
                                                "not an image or an unsupported format")]
