"""The rules that make training right on N GPUs, tested on a CPU: collectives legal under NCCL, no host sync
inside a training step, BatchNorm over the global batch, no training batch of one row, and one rank's fatal error
stopping all of them."""

from __future__ import annotations

import ast
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from cnnjobs.data.augment import make_augment
from cnnjobs.data.pipeline import TrainingData
from cnnjobs.models import build_model
from cnnjobs.spec import load_job
from cnnjobs.train import collectives, epoch
from cnnjobs.train.cache import SplitCache, fold_runts, spans, train_steps
from cnnjobs.train.epoch import Trainee
from cnnjobs.train.progress import Reporter
from cnnjobs.train.schedules import LrSchedule, make_optimizer
from tests.conftest import REPO

CPU = torch.device("cpu")


def test_no_torch_distributed_call_outside_the_collectives_module():
    found = []
    for path in sorted((REPO / "cnnjobs").rglob("*.py")):
        if path.name == "collectives.py":
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = [alias.name for alias in node.names] if isinstance(node, (ast.Import, ast.ImportFrom)) else []
            module = node.module if isinstance(node, ast.ImportFrom) else None
            if any(name.startswith("torch.distributed") for name in names) or \
                    (module or "").startswith("torch.distributed") or (module == "torch" and "distributed" in names):
                found.append(f"{path.relative_to(REPO)}:{node.lineno}")
            if isinstance(node, ast.Attribute) and node.attr == "distributed" and \
                    isinstance(node.value, ast.Name) and node.value.id == "torch":
                found.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert found == [], "torch.distributed outside cnnjobs/train/collectives.py"


def test_each_collective_runs_on_a_device_its_backend_carries():
    cuda = torch.device("cuda", 0)
    assert collectives.device_for("gloo", CPU) == CPU
    assert collectives.device_for("gloo", cuda) == CPU, "gloo groups here carry CPU tensors"
    assert collectives.device_for("cpu:gloo,cuda:nccl", CPU) == CPU
    assert collectives.device_for("cpu:gloo,cuda:nccl", cuda) == cuda
    assert collectives.device_for("nccl", cuda) == cuda
    if torch.cuda.is_available():
        assert collectives.device_for("nccl", CPU).type == "cuda", "NCCL carries CUDA tensors only"
    assert collectives.device_types("nccl") == {"cuda"}
    assert collectives.backend_for(True) == "cpu:gloo,cuda:nccl" and collectives.backend_for(False) == "gloo"


def test_a_gpu_jobs_trainer_carries_a_process_group_for_cpu_and_cuda_tensors(tmp_path):
    from cnnjobs.run.folder import RunDir
    from cnnjobs.train.loop import LoopConfig
    from cnnjobs.train.runner import build_trainer

    job = load_job(REPO / "jobs/digits_lenet.yaml", ["scaling.num_workers=2", "scaling.in_process=false"])
    loop = LoopConfig(job, None, None, (), str(tmp_path / "run"))
    run = RunDir(str(tmp_path / "run"), job.name, "run")
    on_gpu = build_trainer(loop, TrainingData({}, ()), run, use_gpu=True)
    assert on_gpu.backend_config.backend == "cpu:gloo,cuda:nccl"  # Ray alone would pick "nccl"
    assert build_trainer(loop, TrainingData({}, ()), run, use_gpu=False).backend_config.backend == "gloo"


class Reads(TorchDispatchMode):
    """Counts what makes a host wait for a device: scalar reads, and ops whose output size depends on the data."""

    SYNCING = {"nonzero", "masked_select", "unique", "_unique2", "unique_consecutive", "bincount",
               "repeat_interleave", "_local_scalar_dense"}

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in self.SYNCING or (name == "index" and any(
                isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] if len(args) > 1 else []))):
            self.found.append(name)
        return func(*args, **(kwargs or {}))


def trainee(arch: str, rows: int, batch_size: int, augment: bool = False) -> Trainee:
    """A worker's training state on the CPU for a small job, its batches served by the real split cache."""
    job = load_job(REPO / "jobs/digits_lenet.yaml", [f"model.arch={arch}", "train.optimizer=sgd", "train.momentum=0.9",
                                                     "train.schedule={type: cosine}", "train.grad_clip=1.0",
                                                     f"train.batch_size={batch_size}"])
    if augment:
        job = job.model_copy(update={"data": job.data.model_copy(update={"augment": load_job(
            REPO / "jobs/digits_lenet.yaml", ["data.augment={hflip: 0.5, rotation: 10, random_erasing: {p: 0.5}}"]
        ).data.augment})})
    model = build_model(job.model, {"digit": 10}, (28, 28), 1)
    optimizer = make_optimizer(model.parameters(), job.train)
    manifest = type("M", (), {"tasks": {"digit": [str(i) for i in range(10)]}})()
    steps = train_steps(rows, batch_size)
    return Trainee(job, manifest, CPU, 0, model, model, optimizer, torch.amp.GradScaler("cuda", enabled=False),
                   LrSchedule(job.train, optimizer, steps), make_augment(job.data.augment) if augment else None,
                   torch.zeros(1, 1, 1, 1), torch.ones(1, 1, 1, 1), None, torch.contiguous_format, batch_size, steps,
                   {"train": SplitCache(keep=True, equal=True)}, Reporter(None, 0))


def serve(rows: int, monkeypatch) -> None:
    """`rows` digit-like images as the split the cache reads once (instead of Ray Data)."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (rows, 1, 28, 28), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 10, (rows,), generator=generator)

    def batches(t, name, shuffle_seed=None):
        stream = lambda: [{"image": images.numpy(), "label_digit": labels.numpy()}]  # noqa: E731
        yield from t.caches[name].batches(stream, t.batch_size, t.device, shuffle_seed)

    monkeypatch.setattr(epoch, "batches", batches)


@pytest.mark.parametrize("augment", [False, True])
def test_a_training_step_reads_nothing_back_from_the_device(monkeypatch, augment):
    monkeypatch.setattr(epoch, "NOTE_S", 1e9)  # the live note (a read every 0.25 s) is not a step's
    counts = []
    for rows in (40, 160):  # 5 and 20 steps: what a step costs shows as a difference
        serve(rows, monkeypatch)
        t = trainee("lenet5", rows, 8, augment)
        with Reads() as reads:
            epoch.train_epoch(t, 1)
        counts.append(reads.found)
    assert len(counts[0]) == len(counts[1]) <= 3, f"reads per epoch grow with the steps: {counts}"
    assert set(counts[1]) <= {"_local_scalar_dense"}, counts[1]


def test_no_training_batch_of_one_row(monkeypatch):
    assert train_steps(9, 4) == 2 and train_steps(10, 4) == 3 and train_steps(1, 4) == 1 and train_steps(4, 4) == 1
    assert train_steps(5, 1) == 5 and spans(5, 1, fold=True) == [(i, i + 1) for i in range(5)], "batches of one"
    streamed = SplitCache(keep=False, equal=True).batches(lambda: [{"image": np.zeros((5, 1), np.uint8)}], 1, CPU, 0)
    assert [len(b["image"]) for b in streamed] == [1] * 5, "a batch size of one is not folded into one batch"
    sizes = [len(b["image"]) for b in fold_runts({"image": torch.zeros(n, 1)} for n in (4, 4, 1))]
    assert sizes == [4, 5], "a streamed runt joins the batch before it"
    serve(9, monkeypatch)
    t = trainee("bn_cnn", 9, 4)  # BatchNorm1d in its dense block: a batch of one row fails in training mode
    epoch.train_epoch(t, 1)
    assert [len(b["image"]) for b in t.caches["train"].batches(None, 4, CPU, 1)] == [4, 5]


def test_more_than_one_gpu_worker_normalizes_over_the_global_batch():
    from cnnjobs.train.loop import for_workers

    job = load_job(REPO / "jobs/digits_lenet.yaml", ["model.arch=bn_cnn"])

    def synced(model: nn.Module) -> int:
        return sum(isinstance(m, nn.SyncBatchNorm) for m in model.modules())

    def built() -> nn.Module:
        return build_model(job.model, {"digit": 10}, (28, 28), 1)

    batchnorms = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in built().modules())
    assert synced(for_workers(built(), job, world=2, on_gpu=True)) == batchnorms > 0
    assert synced(for_workers(built(), job, world=1, on_gpu=True)) == 0
    assert synced(for_workers(built(), job, world=2, on_gpu=False)) == 0, "SyncBatchNorm runs on GPUs only"
    off = load_job(REPO / "jobs/digits_lenet.yaml", ["model.arch=bn_cnn", "train.sync_batchnorm=false"])
    assert synced(for_workers(built(), off, world=2, on_gpu=True)) == 0


POISON_AFTER = 45  # training steps of rank 1 before its loss turns NaN (epoch 1 has ~40 per worker)


def rank_one_diverges(config):
    """`train_loop` with rank 1's loss NaN from its `POISON_AFTER`-th training step on (rank 0's stays finite)."""
    import ray.train

    from cnnjobs.train import epoch as module
    from cnnjobs.train.loop import train_loop

    if ray.train.get_context().get_world_rank() == 1:
        real, steps = module.forward, [0]

        def forward(t, batch, net, tally):
            loss = real(t, batch, net, tally)
            if torch.is_grad_enabled():
                steps[0] += 1
                if steps[0] > POISON_AFTER:
                    return loss * float("nan")
            return loss

        module.forward = forward
    return train_loop(config)


@pytest.mark.slow
def test_one_ranks_fatal_error_stops_every_rank(ray_cluster, write_job, monkeypatch, capsys):
    from cnnjobs.cli import main
    from cnnjobs.run import checkpoints
    from cnnjobs.train import runner

    monkeypatch.setattr(runner, "train_loop", rank_one_diverges)
    job = write_job({"train.epochs": 6, "scaling.num_workers": 2, "scaling.in_process": False,
                     "scaling.use_gpu": False, "train.max_failures": 3})
    started = time.time()
    assert main(["submit", str(job)]) == 1
    out = " ".join(capsys.readouterr().out.split())
    assert "train failed: the loss became nan at epoch 2, step" in out and "the last good checkpoint is kept" in out
    assert time.time() - started < 120
    (run,) = [p for p in (Path(job).parent / "runs").glob("*/*") if p.is_dir()]
    assert [Path(c).name for c in checkpoints.in_run(str(run))] == ["checkpoint_epoch-0001"]


class Recorder:
    """A reporter that keeps what a worker records as fatal."""

    def __init__(self) -> None:
        self.fatal_errors: list[str] = []

    def step(self, *args) -> None:
        pass

    def fatal(self, message: str) -> None:
        self.fatal_errors.append(message)


def test_a_fatal_error_is_recorded_where_an_epoch_meets_it_for_the_loop_and_the_plans_probe(monkeypatch):
    """`train_epoch` records a non-finite loss before raising it, so a restarted worker group returns at once: in
    the training loop and in `cnnjobs plan`'s probe alike (both train through it)."""
    real = epoch.forward
    monkeypatch.setattr(epoch, "forward", lambda *args: real(*args) * float("nan"))
    serve(40, monkeypatch)
    t = trainee("lenet5", 40, 8)
    t.reporter = Recorder()
    with pytest.raises(epoch.Diverged, match="the loss became nan at epoch 1"):
        epoch.train_epoch(t, 1, limit=3)  # a probe's few steps
    assert len(t.reporter.fatal_errors) == 1 and "the loss became nan" in t.reporter.fatal_errors[0]
