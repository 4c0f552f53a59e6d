"""Benchmark 1: ingest throughput, the Ray Data pipeline of cnnjobs (read shards, decode, shuffle, augment, batch,
normalize) against `torch.utils.data.DataLoader(ImageFolder)` with the same transforms and as many CPU processes.

Both read the same image folder: the DataLoader decodes the JPEG/PNG files every epoch, cnnjobs reads the Parquet
shards it wrote once (that one-time preparation is timed and reported separately). The cnnjobs side is a training
worker's pass over a streamed split, as `train/epoch.py` runs it: Ray Data's blocks (`split_dataset`), shuffled
block by block by the epoch's seed and batched (`SplitCache`), a horizontal flip and the normalization. Reported
separately: warm passes (Ray and its workers up, after one pass), cold passes (the first pass of a fresh Ray
instance, its start not counted), and the time from asking for a pass to its first batch (warm).

    python -m bench.ingest [--rounds 3] [--images 5000]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.common import alternate, median_ratio, record
from cnnjobs.data.augment import make_augment
from cnnjobs.data.pipeline import split_dataset, to_model_input, warm_up
from cnnjobs.data.shards import Manifest, prepare
from cnnjobs.data.synth import synth
from cnnjobs.session import ray_session
from cnnjobs.spec import AugmentSpec, DataSpec
from cnnjobs.train.cache import SplitCache, blocks_of

BATCH = 64
PROCESSES = 2
CPU = torch.device("cpu")


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


def cnnjobs_pass(manifest: Manifest, seed: int = 0) -> tuple[float, float]:
    """One pass over the train split as a worker streams it: (images/s, seconds to the first batch)."""
    train = split_dataset(manifest, "train")
    flip = make_augment(AugmentSpec(hflip=0.5))
    mean = torch.tensor(manifest.mean).view(1, -1, 1, 1)
    std = torch.tensor(manifest.std).view(1, -1, 1, 1)
    blocks = lambda: blocks_of(train, manifest.image_shape)  # noqa: E731
    started, count, first = time.perf_counter(), 0, None
    for step, batch in enumerate(SplitCache(keep=False, equal=True).batches(blocks, BATCH, CPU, seed), 1):
        count += len(to_model_input(flip(batch["image"], step), mean, std))
        first = first if first is not None else time.perf_counter() - started
    return count / (time.perf_counter() - started), first


SESSION = contextlib.ExitStack()


def fresh_ray() -> None:
    """A new Ray instance, started as `cnnjobs submit` starts its embedded one (`ray_session`, then Ray Data's
    warm-up in the background): a cold pass starts from nothing but that."""
    SESSION.close()
    SESSION.enter_context(ray_session(cpus_per_worker=PROCESSES - 1))
    warm_up()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--images", type=int, default=5000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cnnjobs-bench-"))
    workloads = {
        f"cats/dogs stand-in, 150x150 RGB JPEG, {args.images} images":
            (synth("catsdogs", work / "catsdogs", n=int(args.images * 1.5)), 150, 3, "train"),
        "scikit-learn digits, 28x28 grayscale PNG, 1797 images": (write_digits_folder(work / "digits"), 28, 1, ""),
    }
    lines = ["| workload | pass | DataLoader(ImageFolder) img/s | cnnjobs img/s | ratio (median) | target | "
             "cnnjobs first batch s |", "|---|---|---|---|---|---|---|"]
    notes = []
    fresh_ray()
    for name, (root, size, channels, train_dir) in workloads.items():
        print(name, flush=True)
        spec = DataSpec.model_validate({"source": {"type": "image_folder", "path": str(root)}, "image_size": size,
                                        "channels": channels, "cache_dir": str(work / "cache")})
        started = time.perf_counter()
        manifest, _ = prepare(spec)
        notes.append(f"{name}: {sum(manifest.num_rows(s) for s in manifest.files)} images written to shards in "
                     f"{time.perf_counter() - started:.1f} s (once)")
        loader = lambda: dataloader_rate(root / train_dir, size, channels, manifest.mean, manifest.std)  # noqa: E731
        cnnjobs_pass(manifest)  # warm: Ray's workers up, the shards in the page cache
        kinds = [("warm", None, ">= 1.5x", " (target <= 0.3)")]
        if size >= 150:  # the digits' pass is too short to say anything cold
            kinds.append(("cold", fresh_ray, ">= 1.0x", ""))
        for kind, before, target, note in kinds:
            firsts: list[float] = []

            def side(before=before, firsts=firsts) -> float:
                if before is not None:
                    before()
                rate, first = cnnjobs_pass(manifest, len(firsts))
                firsts.append(first)
                return rate

            rates = alternate({"dataloader": loader, "cnnjobs": side}, args.rounds)
            lines.append(f"| {name} | {kind} | {statistics.median(rates['dataloader']):.0f} | "
                         f"{statistics.median(rates['cnnjobs']):.0f} | "
                         f"{median_ratio(rates['cnnjobs'], rates['dataloader']):.2f}x | {target} | "
                         f"{statistics.median(firsts):.3f}{note} |")
        if size >= 150:
            fresh_ray()
    SESSION.close()
    record("1. Ingest throughput: Ray Data from shards vs DataLoader(ImageFolder)", "\n".join(lines),
           f"One pass over the train split per round, batch {BATCH}, {PROCESSES} CPU processes on each side "
           "(DataLoader workers; Ray's CPUs), a random horizontal flip and the normalization on both; the cnnjobs "
           "side streams from the shards (no materialization), shuffled block by block. Warm: Ray and its workers "
           "up; cold: the first pass of a fresh Ray instance started as `cnnjobs submit` starts one (its start not "
           "counted, its background warm-up of Ray Data included); the DataLoader forks its "
           "workers every pass. " + "; ".join(notes) + ".")


if __name__ == "__main__":
    main()
