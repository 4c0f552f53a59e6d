"""Benchmark 1: ingest throughput, the Ray Data pipeline of cnnjobs (read shards, decode, augment, batch,
normalize) against `torch.utils.data.DataLoader(ImageFolder)` with the same transforms and as many CPU processes.

Both read the same image folder: the DataLoader decodes the JPEG/PNG files every epoch, cnnjobs reads the Parquet
shards it wrote once (that one-time preparation is timed and reported separately).

    python -m bench.ingest [--rounds 3] [--images 5000]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ray
import torch

from bench.common import alternate, median_ratio, record
from cnnjobs.data.augment import make_augment
from cnnjobs.data.pipeline import split_dataset, to_model_input
from cnnjobs.data.shards import Manifest, prepare
from cnnjobs.data.synth import synth
from cnnjobs.spec import AugmentSpec, DataSpec

BATCH = 64
PROCESSES = 2


def write_digits_folder(root: Path) -> Path:
    """scikit-learn's digits as 28x28 PNG files in class folders."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    for index, (image, label) in enumerate(zip(digits.images, digits.target)):
        folder = root / str(label)  # class folders only: cnnjobs holds out val/test with data.split
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((image * 255 / 16).astype("uint8")).resize((28, 28)).save(folder / f"{index}.png")
    return root


LOADER = """
import sys, time
import torch
from torch.utils.data import DataLoader
from torchvision import datasets, transforms
folder, (size, channels, batch, processes) = sys.argv[1], map(int, sys.argv[2:6])
mean, std = eval(sys.argv[6]), eval(sys.argv[7])
pipeline = [transforms.Resize((size, size)), transforms.RandomHorizontalFlip(), transforms.ToTensor(),
            transforms.Normalize(mean, std)]
if channels == 1:
    pipeline.insert(0, transforms.Grayscale())
loader = DataLoader(datasets.ImageFolder(folder, transforms.Compose(pipeline)), batch_size=batch, shuffle=True,
                    num_workers=processes)
started, count = time.perf_counter(), 0
for images, _ in loader:
    count += len(images)
print(count / (time.perf_counter() - started))
"""


def dataloader_rate(folder: Path, size: int, channels: int, mean: list[float], std: list[float]) -> float:
    """The seed-style DataLoader in a process of its own: forked workers, as a notebook has them (forking this
    process would copy its Ray client threads into the workers). Its imports are not timed."""
    done = subprocess.run([sys.executable, "-c", LOADER, str(folder), str(size), str(channels), str(BATCH),
                           str(PROCESSES), repr(mean), repr(std)], capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def cnnjobs_rate(manifest: Manifest) -> float:
    """A train pass as a worker streams it (an augmented train split is never kept): read, decode, a seeded
    horizontal flip on the batch and the normalization, as in the training loop."""
    train = split_dataset(manifest, "train")
    flip = make_augment(AugmentSpec(hflip=0.5))
    gen = torch.Generator().manual_seed(0)
    mean = torch.tensor(manifest.mean).view(1, -1, 1, 1)
    std = torch.tensor(manifest.std).view(1, -1, 1, 1)
    started, count = time.perf_counter(), 0
    for batch in train.iter_torch_batches(batch_size=BATCH, local_shuffle_buffer_size=max(16 * BATCH, 1024)):
        count += len(to_model_input(flip(batch["image"], gen), mean, std))
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--images", type=int, default=5000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cnnjobs-bench-"))
    ray.init(num_cpus=PROCESSES, include_dashboard=True, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    workloads = {
        f"cats/dogs stand-in, 150x150 RGB JPEG, {args.images} images":
            (synth("catsdogs", work / "catsdogs", n=int(args.images * 1.5)), 150, 3, "train"),
        "scikit-learn digits, 28x28 grayscale PNG, 1797 images": (write_digits_folder(work / "digits"), 28, 1, ""),
    }
    lines = ["| workload | DataLoader(ImageFolder) img/s | cnnjobs Ray Data img/s | ratio (median) | target | "
             "one-time shard writing |", "|---|---|---|---|---|---|"]
    for name, (root, size, channels, train_dir) in workloads.items():
        print(name, flush=True)
        spec = DataSpec.model_validate({"source": {"type": "image_folder", "path": str(root)}, "image_size": size,
                                        "channels": channels, "cache_dir": str(work / "cache")})
        started = time.perf_counter()
        manifest, _ = prepare(spec)
        prepared = time.perf_counter() - started
        rates = alternate({
            "dataloader": lambda: dataloader_rate(root / train_dir, size, channels, manifest.mean, manifest.std),
            "cnnjobs": lambda: cnnjobs_rate(manifest)}, args.rounds)
        lines.append(f"| {name} | {statistics.median(rates['dataloader']):.0f} | "
                     f"{statistics.median(rates['cnnjobs']):.0f} | "
                     f"{median_ratio(rates['cnnjobs'], rates['dataloader']):.2f}x | >= 2x | "
                     f"{manifest.num_rows('train') + manifest.num_rows('val') + manifest.num_rows('test')} images "
                     f"in {prepared:.1f} s |")
    ray.shutdown()
    record("1. Ingest throughput: Ray Data from shards vs DataLoader(ImageFolder)", "\n".join(lines),
           f"One pass over the train split per round, batch {BATCH}, {PROCESSES} CPU processes on each side "
           "(DataLoader workers; Ray's CPUs), random horizontal flip and normalization on both; the cnnjobs side "
           "streams from the shards (no materialization).")


if __name__ == "__main__":
    main()
