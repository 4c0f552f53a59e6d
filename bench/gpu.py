"""Benchmark 6: one GPU, ResNet-18 at 224 px with bf16 autocast and channels_last, `cnnjobs.submit` vs the plain
PyTorch loop a notebook would run, on the same images (the job's shards held in GPU-side batches), same batch,
optimizer and precision. The first epoch warms up (cuDNN autotuning, the kept split's first read); the median of
the later ones is compared, with images per second.

    python -m bench.gpu [--rounds 2] [--epochs 4] [--images 4000]
"""

from __future__ import annotations

import argparse
import csv
import statistics
import tempfile
import time

import ray
import torch
from torch import nn
from torch.utils.data import DataLoader

from bench.common import alternate, median_ratio, record
from bench.epoch_time import load_split
from cnnjobs.data.shards import Manifest, prepare
from cnnjobs.data.synth import synth
from cnnjobs.models import build_model
from cnnjobs.spec import JobSpec, load_job
from cnnjobs.train.runner import submit
from cnnjobs.train.schedules import make_optimizer


def plain_epoch_time(job: JobSpec, manifest: Manifest, epochs: int) -> float:
    """The notebook loop on the GPU: bf16 autocast, channels_last, pinned batches; median epoch after the first."""
    device = torch.device("cuda")
    torch.manual_seed(job.train.seed)
    task = next(iter(manifest.tasks))
    model = build_model(job.model, {task: len(manifest.tasks[task])}, manifest.image_shape[:2],
                        manifest.image_shape[2]).to(device, memory_format=torch.channels_last)
    optimizer = make_optimizer(model.parameters(), job.train)
    mean = torch.tensor(manifest.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(manifest.std, device=device).view(1, -1, 1, 1)
    train = DataLoader(load_split(manifest, "train"), batch_size=job.train.batch_size, shuffle=True, pin_memory=True)
    val = DataLoader(load_split(manifest, "val"), batch_size=job.train.batch_size, pin_memory=True)
    times = []
    for _ in range(epochs):
        torch.cuda.synchronize()
        started = time.perf_counter()
        model.train()
        for images, labels in train:
            images = images.to(device, non_blocking=True)
            x = ((images.float() / 255 - mean) / std).contiguous(memory_format=torch.channels_last)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                logits = model(x)[task]
            loss = nn.functional.cross_entropy(logits.float(), labels.to(device, non_blocking=True))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            for images, _ in val:
                x = ((images.to(device).float() / 255 - mean) / std).contiguous(memory_format=torch.channels_last)
                model(x)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return statistics.median(times[1:])


def cnnjobs_epoch_time(job: JobSpec) -> float:
    result = submit(job)
    assert result.summary.use_gpu, "the job did not get the GPU"
    rows = list(csv.DictReader(open(f"{result.run_dir}/metrics.csv")))
    return statistics.median(float(row["epoch_s"]) for row in rows[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--images", type=int, default=4000)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench.gpu needs a CUDA GPU")
    out = tempfile.mkdtemp(prefix="cnnjobs-bench-")
    data = synth("catsdogs", f"{out}/data", n=args.images)
    job = load_job("jobs/catsdogs_small_cnn.yaml", [
        f"data.source.path={data}", "data.source.download=null", f"data.cache_dir={out}/cache", f"output.dir={out}",
        "data.image_size=224", "model.arch=resnet18", "model.heads={}", "train.batch_size=128",
        f"train.epochs={args.epochs}", "train.precision=bf16", "train.channels_last=true", "scaling.use_gpu=true"])
    manifest, _ = prepare(job.data)
    ray.init(include_dashboard=False, log_to_driver=False)
    times = alternate({"plain": lambda: plain_epoch_time(job, manifest, args.epochs),
                       "cnnjobs": lambda: cnnjobs_epoch_time(job)}, args.rounds)
    ray.shutdown()
    images = manifest.num_rows("train") + manifest.num_rows("val")
    plain, ours = statistics.median(times["plain"]), statistics.median(times["cnnjobs"])
    table = "\n".join([
        "| side | s/epoch (train + val) | images/s | ratio |", "|---|---|---|---|",
        f"| plain PyTorch loop | {plain:.3f} | {images / plain:.0f} | |",
        f"| cnnjobs submit (1 GPU worker) | {ours:.3f} | {images / ours:.0f} | "
        f"{median_ratio(times['cnnjobs'], times['plain']):.2f}x |"])
    record("6. One GPU: ResNet-18 at 224 px, bf16 + channels_last, cnnjobs vs a plain loop", table,
           f"{manifest.num_rows('train')} train + {manifest.num_rows('val')} val images of the cats/dogs stand-in at "
           f"224x224, batch 128, Adam; {args.epochs} epochs per run, the first discarded, {args.rounds} rounds A B.")


if __name__ == "__main__":
    main()
