"""`cnnjobs submit --address http://...`: the job goes through the Ray Jobs API and its outcome comes back."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.conftest import REPO, cli_env
from tests.test_cli import cnnjobs


def test_relative_output_dir_is_refused_for_a_cluster(tmp_path, monkeypatch):
    from cnnjobs.cluster import submit_to_cluster
    from cnnjobs.errors import JobError
    from cnnjobs.spec import load_job

    monkeypatch.chdir(REPO)
    job = load_job("jobs/digits_lenet.yaml")
    with pytest.raises(JobError, match="output.dir: 'runs' would land in the job's temporary working_dir"):
        submit_to_cluster("jobs/digits_lenet.yaml", job, [], "http://127.0.0.1:1")


@pytest.mark.slow
def test_submit_through_the_jobs_api(ray_cluster, write_job, tmp_path):
    job = write_job({"train.epochs": 1})
    folder = tmp_path / "project"  # what a user's project folder would be: uploaded as the working_dir
    folder.mkdir()
    shutil.copy(job, folder / "job.yaml")
    env = cli_env(RAY_AUTH_MODE="token")  # the session's instance has token authentication on
    done = cnnjobs("submit", "job.yaml", "--address", ray_cluster["dashboard"], "--json", env=env, cwd=folder)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["status"] == "succeeded" and summary["epochs_run"] == 1
    assert "SUCCEEDED" in done.stderr

    bad = cnnjobs("submit", "job.yaml", "--address", ray_cluster["dashboard"], "--set", "train.lr=-1", env=env,
                  cwd=folder)
    assert bad.returncode == 2  # refused here, before anything is sent
