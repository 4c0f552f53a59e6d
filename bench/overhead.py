"""Benchmark 3: fixed overhead of the quickstart, `cnnjobs submit jobs/digits_lenet.yaml` as a user runs it
(embedded local Ray started and stopped), against the same training as a plain PyTorch script.

Measured from the moment the command starts: time to the first finished training step, and total wall time.
cnnjobs runs twice per round: as shipped, and with `RAY_preload_python_modules=torch,cnnjobs.train.loop`, which
makes the local Ray's worker processes import torch as they start (a start-up fix that was tried and measured
slower on 2 cores: the prestarted workers' imports compete with the driver for the CPUs).

    python -m bench.overhead [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from bench.common import ROOT, alternate, record

PLAIN = """
import time, json, sys
started = float(sys.argv[1])
import torch
from torch import nn
from torch.utils.data import DataLoader
from bench.epoch_time import load_split
from cnnjobs.data.shards import prepare
from cnnjobs.models import build_model
from cnnjobs.spec import load_job
from cnnjobs.train.loop import make_optimizer
torch.set_num_threads(1)
job = load_job("jobs/digits_lenet.yaml")
manifest, _ = prepare(job.data)
model = build_model(job.model, {"digit": 10}, manifest.image_shape[:2], manifest.image_shape[2])
optimizer = make_optimizer(model.parameters(), job.train)
mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in (manifest.mean, manifest.std))
first = None
for epoch in range(job.train.epochs):
    for images, labels in DataLoader(load_split(manifest, "train"), batch_size=job.train.batch_size, shuffle=True):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model((images.float() / 255 - mean) / std)["digit"], labels).backward()
        optimizer.step()
        first = first or time.time() - started
print(json.dumps({"first": first, "total": time.time() - started}))
"""


PRELOAD = "torch,cnnjobs.train.loop"


def run_cnnjobs(out: str, first_steps: list[float], preload: bool = False) -> float:
    command = os.path.join(os.path.dirname(sys.executable), "cnnjobs")  # the venv's console script
    env = {**os.environ, **({"RAY_preload_python_modules": PRELOAD} if preload else {})}
    started = time.time()
    done = subprocess.run([command, "submit", "jobs/digits_lenet.yaml", "--json", "--set", f"output.dir={out}"],
                          cwd=ROOT, capture_output=True, text=True, check=True, env=env)
    total = time.time() - started
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    first_steps.append(summary["first_step_at"] - started)
    return total


def run_plain(first_steps: list[float]) -> float:
    started = time.time()
    done = subprocess.run([sys.executable, "-c", PLAIN, str(started)], cwd=ROOT, capture_output=True, text=True,
                          check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    first_steps.append(measured["first"])
    return measured["total"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    out = tempfile.mkdtemp(prefix="cnnjobs-bench-")
    firsts: dict[str, list[float]] = {"plain": [], "cnnjobs": [], "preload": []}
    totals = alternate({"plain": lambda: run_plain(firsts["plain"]),
                        "cnnjobs": lambda: run_cnnjobs(out, firsts["cnnjobs"]),
                        "preload": lambda: run_cnnjobs(out, firsts["preload"], preload=True)}, args.rounds)
    med = {side: (statistics.median(firsts[side]), statistics.median(totals[side])) for side in totals}
    table = "\n".join([
        "| side | to first training step (s) | total wall time (s) |", "|---|---|---|",
        f"| plain PyTorch script | {med['plain'][0]:.1f} | {med['plain'][1]:.1f} |",
        f"| `cnnjobs submit jobs/digits_lenet.yaml` | {med['cnnjobs'][0]:.1f} | {med['cnnjobs'][1]:.1f} |",
        f"| the same, workers preloading torch (`RAY_preload_python_modules={PRELOAD}`) | "
        f"{med['preload'][0]:.1f} | {med['preload'][1]:.1f} |",
        "| target | <= 10 s (cnnjobs) | |"])
    record("3. Fixed overhead of the quickstart (medians of rounds)", table,
           "Both sides are timed from the moment their command starts (imports included) to the first finished "
           "training step; cnnjobs' includes starting the local Ray instance, the TorchTrainer and its worker, "
           "and materializing the dataset in the object store (`first_step_at` in summary.json).")


if __name__ == "__main__":
    main()
