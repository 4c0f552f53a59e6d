"""`cnnjobs data synth | prepare | inspect` on the command line."""

from __future__ import annotations

import json

from cnnjobs.cli import main


def test_synth_prepare_inspect(tmp_path, capsys):
    assert main(["data", "synth", "folder", str(tmp_path / "cfl"), "--json"]) == 0
    path = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["path"]
    sets = ["--set", f"data.source.path={path}", "--set", f"data.cache_dir={tmp_path / 'cache'}",
            "--set", "data.image_size=32"]
    assert main(["data", "prepare", "jobs/cfl_folder.yaml", *sets, "--json"]) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert first["cached"] is False and first["rows"] == {"train": 30, "val": 30, "test": 15}
    assert main(["data", "prepare", "jobs/cfl_folder.yaml", *sets, "--json"]) == 0
    captured = capsys.readouterr()  # with --json the human view goes to stderr
    assert "cache hit" in captured.err and json.loads(captured.out.strip().splitlines()[-1])["cached"] is True

    grid = tmp_path / "grid.png"
    assert main(["data", "inspect", "jobs/cfl_folder.yaml", *sets, "--out", str(grid)]) == 0
    out = capsys.readouterr().out
    assert "task label: 3 classes" in out and "lizard" in out and f"sample images: {grid}" in out
    assert grid.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_data_path_is_one_line_and_exit_2(tmp_path, capsys):
    code = main(["data", "prepare", "jobs/cfl_folder.yaml", "--set", f"data.source.path={tmp_path / 'nope'}"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and f"data.source.path: {tmp_path / 'nope'} does not exist" in err
