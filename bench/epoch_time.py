"""Benchmark 2: steady-state epoch time, `cnnjobs.submit` on 1 worker vs the plain PyTorch loop of the seeds.

Both sides train the same model (from the registry), on the same images (the job's shards, which the plain loop
loads into a TensorDataset as a notebook would), with the same batch size, optimizer and thread count, and both
evaluate the validation split every epoch. The first epoch is warm-up; the median of the later ones is compared.

    python -m bench.epoch_time [--rounds 3] [--epochs 4]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np
import pyarrow.parquet as pq
import ray
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from bench.common import alternate, median_ratio, record
from cnnjobs.data.shards import Manifest, prepare
from cnnjobs.models import build_model
from cnnjobs.spec import JobSpec, load_job
from cnnjobs.train.runner import submit
from cnnjobs.train.schedules import make_optimizer

WORKLOADS = {
    "LeNet-5, digits 28px": ["model.arch=lenet5", "data.image_size=28", "data.channels=1", "train.batch_size=32"],
    "seed 000 CNN, digits 150px RGB": ["model.arch=catsdogs_cnn", "data.image_size=150", "data.channels=3",
                                       "train.batch_size=20", "train.optimizer=adam", "train.lr=0.001"],
}


def load_split(manifest: Manifest, split: str) -> TensorDataset:
    """A split as in-memory tensors, the way a notebook holds a small dataset."""
    tables = [pq.read_table(path) for path in manifest.paths(split)]
    h, w, c = manifest.image_shape
    raw = b"".join(raw for table in tables for raw in table.column("image").to_pylist())
    images = torch.from_numpy(np.frombuffer(raw, np.uint8).reshape(-1, h, w, c).transpose(0, 3, 1, 2).copy())
    task = next(iter(manifest.tasks))
    labels = torch.tensor([y for table in tables for y in table.column(f"label_{task}").to_pylist()])
    return TensorDataset(images, labels)


def plain_epoch_time(job: JobSpec, manifest: Manifest, epochs: int) -> float:
    """The seed-style loop; returns the median epoch time after the first."""
    torch.set_num_threads(int(job.scaling.cpus_per_worker))  # as Ray gives a 1-CPU worker one thread
    torch.manual_seed(job.train.seed)
    task = next(iter(manifest.tasks))
    model = build_model(job.model, {task: len(manifest.tasks[task])}, manifest.image_shape[:2],
                        manifest.image_shape[2])
    optimizer = make_optimizer(model.parameters(), job.train)
    mean = torch.tensor(manifest.mean).view(1, -1, 1, 1)
    std = torch.tensor(manifest.std).view(1, -1, 1, 1)
    train = DataLoader(load_split(manifest, "train"), batch_size=job.train.batch_size, shuffle=True)
    val = DataLoader(load_split(manifest, "val"), batch_size=job.train.batch_size)
    times = []
    for _ in range(epochs):
        started = time.perf_counter()
        model.train()
        for images, labels in train:
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model((images.float() / 255 - mean) / std)[task], labels)
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            for images, _ in val:
                model((images.float() / 255 - mean) / std)
        times.append(time.perf_counter() - started)
    return statistics.median(times[1:])


def cnnjobs_epoch_time(job: JobSpec) -> float:
    """`cnnjobs.submit` on the shared Ray instance; the median `epoch_s` after the first epoch."""
    import csv

    result = submit(job)
    rows = list(csv.DictReader(open(f"{result.run_dir}/metrics.csv")))
    return statistics.median(float(row["epoch_s"]) for row in rows[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    out = tempfile.mkdtemp(prefix="cnnjobs-bench-")
    ray.init(num_cpus=2, include_dashboard=True, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    lines = ["| workload | plain loop s/epoch | cnnjobs s/epoch | ratio (median of rounds) | target |",
             "|---|---|---|---|---|"]
    for name, overrides in WORKLOADS.items():
        print(name, flush=True)
        job = load_job("jobs/digits_lenet.yaml",
                       [*overrides, f"train.epochs={args.epochs}", f"output.dir={out}", "scaling.use_gpu=false"])
        manifest, _ = prepare(job.data)
        times = alternate({"plain": lambda: plain_epoch_time(job, manifest, args.epochs),
                           "cnnjobs": lambda: cnnjobs_epoch_time(job)}, args.rounds)
        lines.append(f"| {name} | {statistics.median(times['plain']):.3f} | {statistics.median(times['cnnjobs']):.3f}"
                     f" | {median_ratio(times['cnnjobs'], times['plain']):.2f}x | <= 1.05x |")
    ray.shutdown()
    record("2. Steady-state epoch time: cnnjobs (1 worker) vs plain PyTorch loop", "\n".join(lines),
           f"{args.epochs} epochs per run, the first one discarded; both sides include the validation pass.")


if __name__ == "__main__":
    main()
