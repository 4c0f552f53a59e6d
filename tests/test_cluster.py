"""`cnnjobs submit --address http://...`: what is decided on the submitting machine (the Jobs API end to end is in
tests/cluster/, on a real two-node cluster)."""

from __future__ import annotations

import pytest

from tests.cli.test_cli import cnnjobs
from tests.conftest import REPO


def test_relative_output_dir_is_refused_for_a_cluster(tmp_path, monkeypatch):
    from cnnjobs.cluster import submit_to_cluster
    from cnnjobs.errors import JobError
    from cnnjobs.spec import load_job

    monkeypatch.chdir(REPO)
    job = load_job("jobs/digits_lenet.yaml")
    with pytest.raises(JobError, match="output.dir: 'runs' would land in the job's temporary working_dir"):
        submit_to_cluster("jobs/digits_lenet.yaml", job, [], "http://127.0.0.1:1")


def test_a_bad_job_is_refused_before_anything_is_sent(write_job, tmp_path):
    """Checks run on the submitting machine: nothing listens at the address, and the answer is still exit 2."""
    job = write_job({"train.epochs": 1})
    bad = cnnjobs("submit", str(job), "--address", "http://127.0.0.1:1", "--set", "train.lr=-1", cwd=tmp_path)
    assert bad.returncode == 2, bad.stderr
    assert "train.lr" in bad.stderr and "Traceback" not in bad.stderr
