"""`cnnjobs models`: the registry listing, one model's layer table, and one-line errors."""

from __future__ import annotations

import json

from cnnjobs.cli import main


def test_models_lists_the_registry_with_parameter_counts(capsys):
    assert main(["models", "--image-size", "64", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out.strip().splitlines()[-1])["models"]}
    assert rows["lenet5"]["params"] > 0 and rows["cfl_cnn"]["image_size"] == [64, 64]
    assert rows["resnext50_32x4d"]["pretrained"] and "seed 003" in rows["resnext50_32x4d"]["source"]


def test_models_name_prints_layers_and_bad_input_exits_2(capsys):
    assert main(["models", "lenet5", "--channels", "1", "--json"]) == 0
    out = capsys.readouterr()
    result = json.loads(out.out.strip().splitlines()[-1])
    assert result["params"] == 44_426 and result["layers"][0]["output_shape"] == [6, 24, 24]
    assert "backbone.0.0" in out.err and "(16, 4, 4)" in out.err
    assert main(["models", "lenett5"]) == 2
    assert capsys.readouterr().err.strip() == ("cnnjobs: error: models lenett5: unknown architecture 'lenett5'; "
                                               "did you mean 'lenet5'?")
    assert main(["models", "convnext_tiny", "--image-size", "16"]) == 2
    assert "data.image_size: convnext_tiny needs images of at least 32 px" in capsys.readouterr().err


def test_models_job_shows_the_jobs_own_model_heads_sizes_and_frozen_parameters(tmp_path, capsys):
    from tests.conftest import stand_in

    styles = stand_in("fashion", tmp_path / "f", n=60)
    assert main(["models", "--job", "jobs/fashion_multi.yaml", "--set", f"data.source.path={styles}",
                 "--set", "data.source.min_count=1", "--json"]) == 0
    card = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert card["image_size"] == [80, 60] and card["channels"] == 3, "non-square, as the job stores its images"
    assert {h["task"]: (h["output"], h["outputs"]) for h in card["heads"]} == {
        "gender": ("softmax", 5), "articleType": ("softmax", 6), "baseColour": ("softmax", 6)}
    assert card["trainable"] == card["params"]

    folder = stand_in("folder", tmp_path / "cfl")
    assert main(["models", "--job", "jobs/cfl_transfer.yaml", "--set", f"data.source.path={folder}",
                 "--set", "data.image_size=64", "--json"]) == 0
    out = capsys.readouterr()
    frozen = json.loads(out.out.strip().splitlines()[-1])
    head = next(layer for layer in frozen["layers"] if layer["name"] == "heads.label")
    assert frozen["trainable"] == head["params"] == 2048 * 3 + 3, "seed 003: only the new 3-way layer trains"
    assert "trainable" in out.err and "frozen" in out.err
