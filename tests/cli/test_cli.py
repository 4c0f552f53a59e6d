"""The command line as users and scripts see it: exit codes, one-line errors, --json, runs and show."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, cli_env


def cnnjobs(*args: str, env: dict | None = None, timeout: int = 600, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cnnjobs.cli", *args], check=False, capture_output=True,
                          text=True, cwd=cwd, env=env or cli_env(), timeout=timeout)


def test_bad_job_file_is_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((REPO / "jobs/digits_lenet.yaml").read_text().replace("lr: 0.05", "lr: -1"))
    done = cnnjobs("submit", str(bad))
    assert done.returncode == 2
    line = next(n for n, text in enumerate(bad.read_text().splitlines(), 1) if "lr: -1" in text)
    assert done.stderr.strip().splitlines() == [f"cnnjobs: error: {bad}:{line}: train.lr: must be > 0 (got -1)"]
    assert "Traceback" not in done.stderr + done.stdout
    assert not (tmp_path / "runs").exists()


def test_bad_arguments_and_unknown_runs_exit_2(tmp_path):
    for args in (["submit"], ["submit", "jobs/digits_lenet.yaml", "--set", "train.lr"],
                 ["show", "nope", "--dir", str(tmp_path)], ["submit", str(tmp_path / "missing.yaml")]):
        done = cnnjobs(*args)
        assert done.returncode == 2, args
        assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr, args
