"""The job schema: what users see when their YAML is wrong, and --set overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from cnnjobs.errors import JobError
from cnnjobs.spec import load_job, parse_override

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(text)
    return path


GOOD = """\
name: t
data:
  source: {type: builtin, name: digits}
  image_size: 28
  channels: 1
model:
  arch: lenet5
train:
  epochs: 2
  lr: 0.01
"""


def error_of(path: Path, overrides: tuple[str, ...] = ()) -> str:
    with pytest.raises(JobError) as caught:
        load_job(path, overrides)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_every_shipped_job_file_validates():
    for path in sorted((REPO / "jobs").glob("*.yaml")):
        job = load_job(path)
        assert job.name


def test_defaults_are_filled_and_round_trip(tmp_path):
    job = load_job(write(tmp_path, GOOD))
    assert job.data.image_size == (28, 28)
    assert job.train.optimizer == "adam" and job.scaling.num_workers == 1 and job.scaling.use_gpu == "auto"
    assert job.train.monitor_mode == "max"
    again = load_job(write(tmp_path, job.to_yaml()))
    assert again == job


def test_negative_lr_names_file_line_and_key(tmp_path):
    path = write(tmp_path, GOOD.replace("lr: 0.01", "lr: -1"))
    assert error_of(path) == f"{path}:10: train.lr: must be > 0 (got -1)"


def test_unknown_key_suggests_the_right_one(tmp_path):
    path = write(tmp_path, GOOD.replace("epochs: 2", "epocs: 2"))
    assert error_of(path) == f"{path}:9: train.epocs: unknown key; did you mean 'epochs'?"


def test_unknown_key_without_a_close_match_lists_the_allowed_ones(tmp_path):
    message = error_of(write(tmp_path, GOOD + "scaling:\n  gpus: 2\n"))
    assert message.endswith(":12: scaling.gpus: unknown key; allowed: num_workers, use_gpu, cpus_per_worker, "
                              "placement, in_process")


def test_unknown_architecture_suggests_a_registered_one(tmp_path):
    message = error_of(write(tmp_path, GOOD.replace("arch: lenet5", "arch: lenet")))
    assert message.endswith(":7: model.arch: unknown architecture 'lenet'; did you mean 'lenet5'?")


def test_wrong_types_and_choices(tmp_path):
    assert error_of(write(tmp_path, GOOD.replace("epochs: 2", "epochs: many"))).endswith(
        "train.epochs: must be an integer (got 'many')")
    assert error_of(write(tmp_path, GOOD.replace("channels: 1", "channels: 2"))).endswith(
        "data.channels: must be one of 1 or 3 (got 2)")
    assert "data.source.type: unknown type 'ftp'" in error_of(write(tmp_path, GOOD.replace("type: builtin",
                                                                                          "type: ftp")))


def test_missing_section_and_bad_split(tmp_path):
    assert error_of(write(tmp_path, GOOD.replace("model:\n  arch: lenet5\n", ""))).endswith(
        ": model: required key is missing")
    message = error_of(write(tmp_path, GOOD.replace("channels: 1", "channels: 1\n  split: {val: 0.6, test: 0.5}")))
    assert "data.split: val + test must be < 1 (got 1.1)" in message


def test_bad_yaml_and_missing_file(tmp_path):
    path = write(tmp_path, GOOD + "  bad: [unclosed\n")
    assert error_of(path).startswith(f"{path}:")
    assert "invalid YAML" in error_of(path)
    assert error_of(tmp_path / "nope.yaml") == f"{tmp_path / 'nope.yaml'}: no such file"
    assert "must be a mapping" in error_of(write(tmp_path, "- just\n- a list\n"))


def test_set_overrides_any_key_with_typed_values(tmp_path):
    job = load_job(write(tmp_path, GOOD), ["train.lr=0.5", "scaling.use_gpu=false", "data.image_size=[32, 24]",
                                           "output.dir=/tmp/x"])
    assert job.train.lr == 0.5 and job.scaling.use_gpu is False
    assert job.data.image_size == (32, 24) and job.output.dir == "/tmp/x"


def test_set_errors_name_the_override(tmp_path):
    path = write(tmp_path, GOOD)
    assert error_of(path, ("train.lr=-2",)) == f"{path}: train.lr (from --set): must be > 0 (got -2)"
    assert "train.lrr (from --set): unknown key; did you mean 'lr'?" in error_of(path, ("train.lrr=1",))
    assert "expected key.path=value" in error_of(path, ("train.lr",))
    assert "name is not a section" in error_of(path, ("name.x=1",))


def test_parse_override_values():
    assert parse_override("a.b=3") == ("a.b", 3)
    assert parse_override("a=[1, 2]") == ("a", [1, 2])
    assert parse_override("a=true") == ("a", True)
    assert parse_override("a=x:y") == ("a", "x:y")


def test_batch_must_split_evenly_among_workers(tmp_path):
    path = write(tmp_path, GOOD + "  batch_size: 30\nscaling:\n  num_workers: 4\n")
    assert error_of(path) == (f"{path}:11: train.batch_size: the batch (30) must split evenly among "
                              "scaling.num_workers (4)")
