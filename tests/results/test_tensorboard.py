"""Epoch rows as TensorBoard scalars, read back from the event file's records (TFRecord framing, Event protos)."""

from __future__ import annotations

import struct
from pathlib import Path

from tensorboardX.proto.event_pb2 import Event
from tensorboardX.record_writer import masked_crc32c

from cnnjobs.results.tensorboard import EVENTS, write_epochs


def read_scalars(folder: Path) -> dict[str, dict[int, float]]:
    """tag -> step -> value from every event file in `folder`; fails if a step of a tag occurs twice."""
    scalars: dict[str, dict[int, float]] = {}
    for path in folder.glob("*tfevents*"):
        data, at = path.read_bytes(), 0
        while at < len(data):
            header = data[at:at + 8]
            (length,) = struct.unpack("<Q", header)
            assert struct.unpack("<I", data[at + 8:at + 12])[0] == masked_crc32c(header)
            record = data[at + 12:at + 12 + length]
            assert struct.unpack("<I", data[at + 12 + length:at + 16 + length])[0] == masked_crc32c(record)
            at += 16 + length
            event = Event.FromString(record)
            for value in event.summary.value:
                assert event.step not in scalars.setdefault(value.tag, {}), f"{value.tag} step {event.step} twice"
                scalars[value.tag][event.step] = value.simple_value
    return scalars


def epoch_row(epoch: int, acc: float) -> dict:
    return {"epoch": epoch, "train/loss": 1 / epoch, "val/acc": acc, "val/digit/acc": acc, "lr": 0.1 / epoch,
            "time/wait_s": 0.01 * epoch, "epoch_s": 2.0, "best_epoch": epoch, "stopped_early": False,
            "val/confusion": {"digit": [[1, 0], [0, 1]]}, "test/acc": None}


def test_every_numeric_metric_is_a_scalar_at_its_epoch(tmp_path):
    rows = [epoch_row(e, 0.5 + e / 10) for e in range(1, 4)]
    assert write_epochs(str(tmp_path / "tb"), rows) == 3 * 7
    scalars = read_scalars(tmp_path / "tb")
    assert set(scalars) == {"train/loss", "val/acc", "val/digit/acc", "lr", "time/wait_s", "epoch_s", "best_epoch"}
    assert scalars["val/digit/acc"] == {1: 0.6000000238418579, 2: 0.699999988079071, 3: 0.800000011920929}
    assert sorted(scalars["lr"]) == [1, 2, 3] and abs(scalars["lr"][2] - 0.05) < 1e-7


def test_a_resumed_run_writes_no_epoch_twice_and_rerun_epochs_take_their_new_values(tmp_path):
    folder = tmp_path / "trial_0001"
    rows = [epoch_row(e, 0.5) for e in range(1, 4)]
    write_epochs(str(folder), rows)
    resumed = rows[:2] + [epoch_row(e, 0.9) for e in range(3, 6)]  # epoch 3 ran again after the resume
    write_epochs(str(folder), resumed)
    assert [path.name for path in folder.iterdir()] == [EVENTS]
    scalars = read_scalars(folder)
    assert sorted(scalars["val/acc"]) == [1, 2, 3, 4, 5]
    assert scalars["val/acc"][2] == 0.5 and scalars["val/acc"][3] == scalars["val/acc"][5] == 0.8999999761581421


def test_rows_read_back_from_metrics_csv_as_strings(tmp_path):
    rows = [{"epoch": "1", "val/acc": "0.75", "lr": "0.1", "test/acc": ""}, {"epoch": "2", "val/acc": "0.8"}]
    assert write_epochs(str(tmp_path), rows) == 3
    assert read_scalars(tmp_path) == {"val/acc": {1: 0.75, 2: 0.800000011920929}, "lr": {1: 0.10000000149011612}}
