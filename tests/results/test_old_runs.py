"""Runs written by cnnjobs 0.1 (summary schema 1, before the typed summary) still load, show and list.

`v1_runs/` holds a training run and a search made with that version (commit 806a17a: `cnnjobs submit
jobs/digits_lenet.yaml --set train.epochs=2` and `cnnjobs tune jobs/arch_search.yaml --set train.epochs=2
--set tune.num_samples=1`), copied as they were written (without checkpoints).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from cnnjobs.cli import main
from cnnjobs.data.shards import prepare
from cnnjobs.results.epochs import class_rows
from cnnjobs.run.find import list_runs, load_run
from cnnjobs.run.summary import SCHEMA_VERSION, TrainSummary, TuneSummary
from cnnjobs.spec import load_job

OLD = Path(__file__).parent / "v1_runs"
TRAIN = "digits_lenet/20261124-230247-4629"
SEARCH = "arch_search/20261124-230348-207d"


@pytest.fixture
def old_runs(tmp_path: Path) -> Path:
    shutil.copytree(OLD, tmp_path / "runs")
    return tmp_path / "runs"


def test_a_version_1_training_run_is_upgraded_with_its_confusion_and_precision(old_runs):
    raw = json.loads((old_runs / TRAIN / "summary.json").read_text())
    assert "schema_version" not in raw and "test_confusion" in raw  # really the old format
    summary = load_run(str(old_runs / TRAIN)).summary
    assert isinstance(summary, TrainSummary) and summary.schema_version == SCHEMA_VERSION
    assert summary.status == "succeeded" and summary.epochs_run == 2
    assert summary.evaluated == "test" and summary.confusion == raw["test_confusion"]
    assert summary.metrics["test"].acc == raw["metrics"]["test"]["acc"]
    # Precision, which version 1 did not keep, comes back from its confusion matrix.
    assert summary.per_class["digit"] == class_rows(raw["test_confusion"]["digit"], raw["data"]["classes"]["digit"])
    assert any(row.precision is not None for row in summary.per_class["digit"])


def test_a_version_1_search_loads_with_its_trials(old_runs):
    raw = json.loads((old_runs / SEARCH / "summary.json").read_text())
    summary = load_run(str(old_runs / SEARCH)).summary
    assert isinstance(summary, TuneSummary) and summary.schema_version == SCHEMA_VERSION
    assert summary.best_trial.model_dump(exclude_none=True).items() >= {
        k: v for k, v in raw["best_trial"].items() if v is not None}.items()
    assert summary.trials == raw["trials"] and summary.epochs_run == raw["epochs_run"]
    assert summary.trials_stopped_early == raw["stopped_early"]


def test_show_runs_and_predict_on_old_runs(old_runs, tmp_path, capsys):
    assert main(["runs", "--dir", str(old_runs), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["runs"]
    assert sorted(run["job"] for run in listed) == ["arch_search", "digits_lenet"]
    assert {run["status"] for run in listed} == {"succeeded"}
    assert [run.summary.job for run in list_runs(str(old_runs), job="digits_lenet", status="succeeded")] == [
        "digits_lenet"]
    for run in (TRAIN, SEARCH):
        assert main(["show", str(old_runs / run)]) == 0
    assert "precision" in capsys.readouterr().out

    # Version 1 did not record the normalization: predict reads it back from the run's shards ...
    image = tmp_path / "blank.png"
    Image.new("L", (28, 28), 255).save(image)
    job = load_job(old_runs / TRAIN / "job.yaml", [f"data.cache_dir={tmp_path / 'cache'}"])
    manifest, _ = prepare(job.data)
    summary_file = old_runs / TRAIN / "summary.json"
    raw = json.loads(summary_file.read_text())
    summary_file.write_text(json.dumps({**raw, "data": {**raw["data"], "shards": manifest.location}}))
    assert main(["predict", str(old_runs / TRAIN), str(image), "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["predictions"]
    assert row["top"]["digit"][0]["class"] in raw["data"]["classes"]["digit"]
    # ... and says what to do when they are gone.
    shutil.rmtree(manifest.location)
    assert main(["predict", str(old_runs / TRAIN), str(image)]) == 2
    assert "written by an older cnnjobs that did not record the normalization, and its shards" in \
        capsys.readouterr().err
