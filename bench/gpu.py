"""Benchmark 6: one GPU, ResNet-18 and ResNet-50 at 224 px, bf16 autocast, channels_last, a random horizontal flip
and a random resized crop: images/s of three sides, each against the GPU-bound ceiling.

  - ceiling: the same model fed one batch that stays on the GPU, over and over (as Ray's own ingest benchmark does
    in its mock mode): the step alone, with the same augmentation, no data pipeline at all;
  - plain: the PyTorch loop a notebook runs: `DataLoader` over the decoded images with 8 worker processes doing the
    flip and the crop per image (torchvision), pinned memory, non-blocking copies;
  - cnnjobs: `cnnjobs.submit` of the same job (1 GPU worker), its median epoch after the first.

Targets: cnnjobs >= 0.9x the ceiling and >= 1.0x the plain loop. The first epoch of each side warms up (cuDNN
autotuning, the kept split's first read) and is not counted.

    python -m bench.gpu [--images 20000] [--epochs 3] [--rounds 2] [--models resnet18,resnet50]
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
from torch.utils.data import DataLoader, Dataset

from bench.common import alternate, record
from bench.epoch_time import load_split
from cnnjobs.data.augment import make_augment
from cnnjobs.data.shards import Manifest, prepare
from cnnjobs.data.synth import synth
from cnnjobs.models import build_model
from cnnjobs.spec import JobSpec, load_job
from cnnjobs.train.runner import submit
from cnnjobs.train.schedules import make_optimizer

BATCH = 128


def model_of(job: JobSpec, manifest: Manifest) -> tuple[nn.Module, str]:
    task = next(iter(manifest.tasks))
    torch.manual_seed(job.train.seed)
    model = build_model(job.model, {task: len(manifest.tasks[task])}, manifest.image_shape[:2],
                        manifest.image_shape[2]).to("cuda", memory_format=torch.channels_last)
    return model, task


def step(model: nn.Module, optimizer: torch.optim.Optimizer, task: str, x: torch.Tensor, labels: torch.Tensor,
         mean: torch.Tensor, std: torch.Tensor) -> None:
    x = ((x.float() / 255 - mean) / std).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits = model(x)[task]
    loss = nn.functional.cross_entropy(logits.float(), labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def ceiling(job: JobSpec, manifest: Manifest, steps: int) -> float:
    """Images/s of the step alone: one batch on the GPU, augmented on the GPU as cnnjobs does, over and over."""
    model, task = model_of(job, manifest)
    optimizer = make_optimizer(model.parameters(), job.train)
    augment = make_augment(job.data.augment)
    images, labels = load_split(manifest, "train")[:BATCH]
    images, labels = images.cuda(), labels.cuda()
    mean = torch.tensor(manifest.mean, device="cuda").view(1, -1, 1, 1)
    std = torch.tensor(manifest.std, device="cuda").view(1, -1, 1, 1)
    model.train()
    for warm in range(20):
        step(model, optimizer, task, augment(images, warm), labels, mean, std)
    torch.cuda.synchronize()
    started = time.perf_counter()
    for index in range(steps):
        step(model, optimizer, task, augment(images, index), labels, mean, std)
    torch.cuda.synchronize()
    return steps * BATCH / (time.perf_counter() - started)


class Cropped(Dataset):
    """The decoded train split, flipped and crop-resized per image in the DataLoader's workers (torchvision)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, size: int) -> None:
        from torchvision.transforms import v2

        self.images, self.labels = images, labels
        self.transform = v2.Compose([v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip()])

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(self.images[index]), self.labels[index]


def plain(job: JobSpec, manifest: Manifest, epochs: int) -> float:
    """Images/s of the notebook loop's training epochs (median of those after the first)."""
    model, task = model_of(job, manifest)
    optimizer = make_optimizer(model.parameters(), job.train)
    images, labels = load_split(manifest, "train")[:]
    loader = DataLoader(Cropped(images, labels, manifest.image_shape[0]), batch_size=BATCH, shuffle=True,
                        num_workers=8, pin_memory=True, persistent_workers=True, drop_last=True)
    mean = torch.tensor(manifest.mean, device="cuda").view(1, -1, 1, 1)
    std = torch.tensor(manifest.std, device="cuda").view(1, -1, 1, 1)
    rates = []
    model.train()
    for _ in range(epochs):
        torch.cuda.synchronize()
        started, seen = time.perf_counter(), 0
        for batch, truth in loader:
            step(model, optimizer, task, batch.cuda(non_blocking=True), truth.cuda(non_blocking=True), mean, std)
            seen += len(batch)
        torch.cuda.synchronize()
        rates.append(seen / (time.perf_counter() - started))
    return statistics.median(rates[1:])


def cnnjobs(job: JobSpec, manifest: Manifest) -> float:
    """Images/s of `cnnjobs submit`'s training epochs (median of those after the first), from its metrics.csv:
    the training rows over the epoch's training time (wait + compute + sync, without the validation)."""
    result = submit(job)
    assert result.summary.use_gpu, "the job did not get the GPU"
    rows = list(csv.DictReader(open(f"{result.run_dir}/metrics.csv")))
    seconds = [float(row["time/wait_s"]) + float(row["time/compute_s"]) for row in rows[1:]]
    return manifest.num_rows("train") / statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--models", default="resnet18,resnet50")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench.gpu needs a CUDA GPU")
    out = tempfile.mkdtemp(prefix="cnnjobs-bench-")
    data = synth("catsdogs", f"{out}/data", n=args.images)
    rows = []
    ray.init(include_dashboard=False, log_to_driver=False)
    for arch in args.models.split(","):
        job = load_job("jobs/catsdogs_small_cnn.yaml", [
            f"data.source.path={data}", "data.source.download=null", f"data.cache_dir={out}/cache",
            f"output.dir={out}", "data.image_size=224", f"model.arch={arch}", "model.heads={}",
            f"train.batch_size={BATCH}", f"train.epochs={args.epochs}", "train.precision=bf16",
            "train.channels_last=true", "train.validate_every=1000", "scaling.use_gpu=true",
            "data.augment={hflip: 0.5, random_resized_crop: {scale: [0.08, 1.0]}}"])
        manifest, _ = prepare(job.data)
        steps = manifest.num_rows("train") // BATCH
        rates = alternate({"ceiling": lambda: ceiling(job, manifest, steps),
                           "plain": lambda: plain(job, manifest, args.epochs),
                           "cnnjobs": lambda: cnnjobs(job, manifest)}, args.rounds)
        top = statistics.median(rates["ceiling"])
        for side in ("ceiling", "plain", "cnnjobs"):
            rate = statistics.median(rates[side])
            rows.append(f"| {arch} | {side} | {rate:,.0f} | {rate / top:.2f}x |")
        ours, theirs = statistics.median(rates["cnnjobs"]), statistics.median(rates["plain"])
        rows.append(f"| {arch} | cnnjobs / plain | | {ours / theirs:.2f}x |")
    ray.shutdown()
    table = "| model | side | train images/s | / ceiling |\n|---|---|---|---|\n" + "\n".join(rows)
    record("6. One GPU: ResNet-18 and ResNet-50 at 224 px, bf16, channels_last, flip + random resized crop: "
           "cnnjobs and a plain loop against the GPU-bound ceiling", table,
           f"{args.images} images of the cats/dogs stand-in at 224x224, batch {BATCH}, Adam; {args.epochs} epochs "
           f"per run, the first discarded, {args.rounds} rounds. Targets: cnnjobs >= 0.9x the ceiling, >= 1.0x plain.")


if __name__ == "__main__":
    main()
