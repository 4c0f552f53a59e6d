"""Training that goes wrong: a loss that turns NaN, memory that runs out, a damaged checkpoint, a full disk.

Each failure stops the run with one line that names where it happened and what to change, exit code 1, and keeps
what was written before it: the NaN run keeps its last good checkpoint, and `--resume` continues from it.
The loop runs in this process (`scaling.in_process: true`), so the tests inject the failure by patching it.
"""

from __future__ import annotations

import csv
import errno
import json
from pathlib import Path

import pyarrow.fs as pafs
import pytest
import torch

from cnnjobs import storage
from cnnjobs.cli import main
from cnnjobs.run import checkpoints, layout
from cnnjobs.run.find import load_run
from cnnjobs.run.folder import RunDir, utc_now
from cnnjobs.run.summary import TrainSummary
from cnnjobs.train import epoch as training
from cnnjobs.train.resume import reopen


def _job(write_job, epochs: int, **changes):
    return write_job({"train.epochs": epochs, "train.keep_checkpoints": 2, "scaling.in_process": True,
                      "scaling.use_gpu": False, **changes})


def _poison(monkeypatch, make_error, after_validations: int) -> None:
    """Make the training loss fail once the loop has validated `after_validations` times: at the first step of
    epoch `after_validations + 1` (validation runs without gradients, training with them)."""
    real = training.task_loss
    seen = {"validations": 0, "in_validation": False}

    def task_loss(*args, **kwargs):
        training = torch.is_grad_enabled()
        if not training and not seen["in_validation"]:
            seen["validations"] += 1
        seen["in_validation"] = not training
        loss = real(*args, **kwargs)
        if training and seen["validations"] >= after_validations:
            return make_error(loss)
        return loss

    monkeypatch.setattr(training, "task_loss", task_loss)


def _epochs(run: Path) -> list[int]:
    return [int(row["epoch"]) for row in csv.DictReader(open(run / layout.METRICS))]


def _only_run(root: Path) -> Path:
    (run,) = [p for p in root.glob("*/*") if p.is_dir()]
    return run


@pytest.mark.slow
def test_nan_loss_stops_naming_epoch_and_step_then_resume_passes_over_a_truncated_checkpoint(
        ray_cluster, write_job, tmp_path, monkeypatch, capsys):
    job = _job(write_job, 4)
    _poison(monkeypatch, lambda loss: loss * float("nan"), after_validations=2)
    assert main(["submit", str(job)]) == 1
    out = capsys.readouterr().out.replace("\n", " ")
    assert "the loss became nan at epoch 3, step 1; lower train.lr or set train.grad_clip" in out
    run = _only_run(tmp_path / "runs")
    summary = load_run(str(run)).summary
    assert summary.status == "failed" and "epoch 3, step 1" in summary.error
    assert _epochs(run) == [1, 2]  # the good epochs, kept with their checkpoints
    assert [Path(c).name for c in checkpoints.in_run(str(run))] == ["checkpoint_epoch-0002", "checkpoint_epoch-0001"]

    # A run stopped between saving epoch 2's checkpoint and recording its row (the order a kill -9 can fall in,
    # forced here): the checkpoint carries the rows of its epochs, so resuming from it loses no epoch.
    metrics = (run / layout.METRICS).read_text()
    (run / layout.METRICS).write_text("".join(metrics.splitlines(keepends=True)[:2]))  # header and epoch 1
    previous, _ = reopen(str(run), None)
    assert [row["epoch"] for row in previous.rows] == [1, 2]
    assert previous.rows[1]["val/acc"] == pytest.approx(float(metrics.splitlines()[2].split(",")[
        metrics.splitlines()[0].split(",").index("val/acc")]))
    assert previous.notes == ["from checkpoint_epoch-0002"]
    (run / layout.METRICS).write_text(metrics)

    # The newest checkpoint is damaged (a copy cut short): --resume passes over it, says so, and goes on from epoch 1.
    monkeypatch.undo()
    weights = run / "checkpoint_epoch-0002" / layout.CHECKPOINT_MODEL
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    assert main(["submit", "--resume", str(run)]) == 0
    out = capsys.readouterr().out.replace("\n", " ")
    assert f"continuing {run} from checkpoint_epoch-0001, passed over checkpoint_epoch-0002: model.pt is " \
           "unreadable" in out
    summary = load_run(str(run)).summary
    assert summary.status == "succeeded" and summary.epochs_run == 4
    assert _epochs(run) == [1, 2, 3, 4]  # epoch 2 trained again, every epoch once
    assert (run / layout.BEST_MODEL).exists()


@pytest.mark.slow
def test_out_of_memory_names_the_settings_to_lower(ray_cluster, write_job, tmp_path, monkeypatch, capsys):
    def out_of_memory(loss):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    _poison(monkeypatch, out_of_memory, after_validations=0)
    assert main(["submit", str(_job(write_job, 2))]) == 1
    out = capsys.readouterr().out.replace("\n", " ")
    assert "out of memory at epoch 1, step 1 on cpu (CUDA out of memory. Tried to allocate 20.00 GiB): lower " \
           "train.batch_size (now 32) or data.image_size, or set train.precision: bf16" in out
    run = _only_run(tmp_path / "runs")
    assert load_run(str(run)).summary.status == "failed"
    assert "out of memory at epoch 1, step 1" in (run / "logs" / layout.CNNJOBS_LOG).read_text()  # with a traceback


class _FullDisk:
    """A filesystem whose disk fills up: every new file gets half its bytes, then ENOSPC (as a real full disk)."""

    def __init__(self, fs: pafs.FileSystem) -> None:
        self._fs = fs

    def __getattr__(self, name: str):
        return getattr(self._fs, name)

    def open_output_stream(self, path: str):
        stream = self._fs.open_output_stream(path)

        class Half:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                stream.close()

            def write(self, data: bytes) -> None:
                stream.write(data[: len(data) // 2])
                raise OSError(errno.ENOSPC, "No space left on device", path)

        return Half()


def test_a_full_disk_leaves_the_previous_summary_and_checkpoints_intact(tmp_path, monkeypatch):
    run = RunDir.create(str(tmp_path / "runs"), "job", "name: job\n")
    summary = TrainSummary(job="job", run_id=run.run_id, run_dir=run.location, started=utc_now(), monitor="val/acc",
                           mode="max", arch="lenet5", epochs=3, status="running")
    run.write_summary(summary)
    before = (Path(run.location) / layout.SUMMARY).read_bytes()

    # Two checkpoints written, then the disk fills while the third is copied in.
    weights = {"w": torch.arange(4.0)}
    for epoch in (1, 2):
        folder = tmp_path / f"local{epoch}"
        folder.mkdir()
        rows = [{"epoch": done} for done in range(1, epoch + 1)]
        checkpoints.write(str(folder), weights, {"epoch": epoch, "rows": rows}, None, 0.5 * epoch)
        checkpoints.persist(str(folder), run.location, epoch, keep=2, mode="max")
    real_write = storage.write_bytes

    def fill_at_the_state(location, data):  # the weights are in, then the disk is full
        if location.endswith(layout.CHECKPOINT_STATE):
            raise OSError(errno.ENOSPC, "No space left on device", location)
        real_write(location, data)

    monkeypatch.setattr(storage, "write_bytes", fill_at_the_state)
    with pytest.raises(OSError, match="No space left"):
        checkpoints.persist(str(tmp_path / "local2"), run.location, 3, keep=2, mode="max")
    monkeypatch.undo()
    # Epoch 3's folder holds what was written before the disk filled, but not its marker: it is passed over.
    assert [Path(c).name for c in checkpoints.in_run(run.location)] == ["checkpoint_epoch-0002",
                                                                       "checkpoint_epoch-0001"]
    loaded, rows, passed = checkpoints.resumable(run.location, [])
    assert loaded.state["epoch"] == 2 and rows == [{"epoch": 1}, {"epoch": 2}]
    assert passed == ["checkpoint_epoch-0003 (incomplete: its writing was cut short)"]

    # The summary's next version does not fit: the one before stays, and no temporary file is left behind.
    monkeypatch.setattr(storage, "resolve", lambda location, real=storage.resolve: (
        _FullDisk(real(location)[0]), real(location)[1]))
    summary.status = "succeeded"
    with pytest.raises(OSError, match="No space left"):
        run.write_summary(summary)
    monkeypatch.undo()
    assert (Path(run.location) / layout.SUMMARY).read_bytes() == before
    assert json.loads(before)["status"] == "running"
    assert sorted(p.name for p in Path(run.location).iterdir() if ".tmp" in p.name) == []
