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
