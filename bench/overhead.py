"""Benchmark 3: start-up and end-to-end overhead, as a user runs the commands.

Every side is timed from the moment its command starts (imports included), each in a fresh process:
  a. the quickstart's first training step, `cnnjobs submit jobs/digits_lenet.yaml` on the embedded local Ray,
     against a hand-written Ray Train script (TorchTrainer with one worker actor, the 1,259 training digits from
     NumPy through Ray Data, one LeNet step) on its own fresh local Ray: target <= 0.5x;
  b. the quickstart's first step on a warm local instance (`cnnjobs up` once, not timed): target <= 8 s;
  c. end to end, a 10-epoch LeNet-5 job on 5,000 28x28 images (`cnnjobs data synth mnist -n 5000`, the job
     `jobs/mnist_lenet.yaml`, shards already written) against a plain PyTorch script with the same settings (the
     same split sizes, batch 128, SGD lr 0.1, validation every epoch, a test pass): target <= 3x.

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
from pathlib import Path

from bench.common import ROOT, alternate, median_ratio, record

HAND_WRITTEN = """
import json, sys, tempfile, time
started = float(sys.argv[1])
import numpy as np, ray, ray.train, torch
from ray.train.torch import TorchTrainer, prepare_model
from sklearn.datasets import load_digits
from torch import nn

def loop(config):
    model = prepare_model(nn.Sequential(
        nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(256, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10)))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    for batch in ray.train.get_dataset_shard("train").iter_torch_batches(batch_size=32):
        loss = nn.functional.cross_entropy(model(batch["image"].float().unsqueeze(1) / 255), batch["label"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with open(config["stamp"], "w") as stamp:  # same machine: Train V2's Result.metrics is empty here
            stamp.write(str(time.time()))
        break

digits = load_digits()
images = torch.nn.functional.interpolate(torch.tensor(digits.images[:1259] * 255 / 16).unsqueeze(1), size=28)
images = images.squeeze(1).to(torch.uint8).numpy()
ray.init()
train = ray.data.from_items([{"image": image, "label": int(label)} for image, label in zip(images, digits.target)])
stamp = tempfile.mktemp()
TorchTrainer(loop, train_loop_config={"stamp": stamp}, datasets={"train": train},
             scaling_config=ray.train.ScalingConfig(num_workers=1),
             run_config=ray.train.RunConfig(storage_path=tempfile.mkdtemp())).fit()
print(json.dumps({"first": float(open(stamp).read()) - started, "total": time.time() - started}))
"""

PLAIN_MNIST = """
import gzip, json, sys, time
started = float(sys.argv[1])
import numpy as np, torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

def idx(name):
    with gzip.open(f"{sys.argv[2]}/{name}-ubyte.gz") as f:
        raw = f.read()
    dims = raw[3]
    shape = np.frombuffer(raw[4:4 + 4 * dims], ">u4")
    return np.frombuffer(raw[4 + 4 * dims:], np.uint8).reshape(shape)

torch.manual_seed(2)
x, y = torch.tensor(idx("train-images-idx3")).unsqueeze(1), torch.tensor(idx("train-labels-idx1")).long()
order = torch.randperm(len(y))
n_val = round(len(y) * 0.1667)
val, train = order[:n_val], order[n_val:]
test = TensorDataset(torch.tensor(idx("t10k-images-idx3")).unsqueeze(1), torch.tensor(idx("t10k-labels-idx1")).long())
model = nn.Sequential(
    nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
    nn.Flatten(), nn.Linear(256, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

def accuracy(data):
    model.eval()
    with torch.no_grad():
        right = sum((model(xb.float() / 255).argmax(1) == yb).sum().item() for xb, yb in DataLoader(data, 512))
    return right / len(data)

for epoch in range(10):
    model.train()
    for xb, yb in DataLoader(TensorDataset(x[train], y[train]), batch_size=128, shuffle=True):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(xb.float() / 255), yb).backward()
        optimizer.step()
    val_acc = accuracy(TensorDataset(x[val], y[val]))
print(json.dumps({"total": time.time() - started, "val_acc": val_acc, "test_acc": accuracy(test)}))
"""


def cnnjobs_command(*args: str) -> list[str]:
    return [os.path.join(os.path.dirname(sys.executable), "cnnjobs"), *args]  # the venv's console script


def run_submit(job: str, out: str, firsts: list[float], accs: list[float], *overrides: str) -> float:
    """`cnnjobs submit` in a fresh process; appends its first step (from the command's start) and test accuracy."""
    sets = [arg for override in (f"output.dir={out}", *overrides) for arg in ("--set", override)]
    started = time.time()
    done = subprocess.run(cnnjobs_command("submit", job, "--json", *sets), cwd=ROOT, capture_output=True,
                          text=True, check=True)
    total = time.time() - started
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    firsts.append(summary["first_step_at"] - started)
    accs.append(summary["metrics"]["test"]["acc"])
    return total


def run_script(script: str, firsts: list[float] | None, accs: list[float] | None, *args: str) -> float:
    started = time.time()
    done = subprocess.run([sys.executable, "-c", script, str(started), *args], cwd=ROOT, capture_output=True,
                          text=True, check=True)
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    if firsts is not None:
        firsts.append(measured["first"])
    if accs is not None:
        accs.append(measured["test_acc"])
    return measured["total"]


def med(values: list[float]) -> str:
    return f"{statistics.median(values):.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    out = tempfile.mkdtemp(prefix="cnnjobs-bench-")
    mnist = Path(out) / "mnist"
    subprocess.run(cnnjobs_command("data", "synth", "mnist", str(mnist), "-n", "5000"), check=True)
    mnist_sets = [f"data.source.path={mnist}", f"data.cache_dir={out}/cache"]
    subprocess.run(cnnjobs_command("data", "prepare", "jobs/mnist_lenet.yaml", *[a for s in mnist_sets
                                                                                  for a in ("--set", s)]),
                   cwd=ROOT, check=True, capture_output=True)

    first: dict[str, list[float]] = {"hand": [], "cold": [], "warm": [], "mnist cold": [], "mnist warm": []}
    acc: dict[str, list[float]] = {side: [] for side in ("cold", "warm", "plain", "mnist cold", "mnist warm")}
    print("a. cold: hand-written TorchTrainer vs cnnjobs submit", flush=True)
    cold = alternate({"hand": lambda: run_script(HAND_WRITTEN, first["hand"], None),
                      "cnnjobs": lambda: run_submit("jobs/digits_lenet.yaml", out, first["cold"], acc["cold"])},
                     args.rounds)
    print("c. end to end (cold): plain script vs cnnjobs submit", flush=True)
    e2e_cold = alternate({
        "plain": lambda: run_script(PLAIN_MNIST, None, acc["plain"], str(mnist)),
        "cnnjobs": lambda: run_submit("jobs/mnist_lenet.yaml", out, first["mnist cold"], acc["mnist cold"],
                                      *mnist_sets)}, args.rounds)

    started = time.time()
    subprocess.run(cnnjobs_command("up"), check=True, capture_output=True)
    up_s = time.time() - started
    try:
        print("b./c. on a warm local instance", flush=True)
        warm = alternate({
            "quickstart": lambda: run_submit("jobs/digits_lenet.yaml", out, first["warm"], acc["warm"]),
            "mnist": lambda: run_submit("jobs/mnist_lenet.yaml", out, first["mnist warm"], acc["mnist warm"],
                                        *mnist_sets)}, args.rounds)
    finally:
        subprocess.run(cnnjobs_command("down"), check=True, capture_output=True)

    table = "\n".join([
        "| figure | cnnjobs | reference | ratio (median of rounds) | target |", "|---|---|---|---|---|",
        f"| a. quickstart first step, cold (s) | {med(first['cold'])} | hand-written TorchTrainer {med(first['hand'])}"
        f" | {median_ratio(first['cold'], first['hand']):.2f}x | <= 0.5x |",
        f"| b. quickstart first step, warm instance (s) | {med(first['warm'])} | | | <= 8 s |",
        f"| quickstart total wall time, cold / warm (s) | {med(cold['cnnjobs'])} / {med(warm['quickstart'])} | "
        f"hand-written, one step: {med(cold['hand'])} | | |",
        f"| c. 10-epoch LeNet on 5,000 images, cold (s) | {med(e2e_cold['cnnjobs'])} | plain script "
        f"{med(e2e_cold['plain'])} | {median_ratio(e2e_cold['cnnjobs'], e2e_cold['plain']):.2f}x | <= 3x |",
        f"| c. the same on a warm instance (s) | {med(warm['mnist'])} | plain script {med(e2e_cold['plain'])} | "
        f"{median_ratio(warm['mnist'], e2e_cold['plain']):.2f}x | <= 3x |",
        f"| c. test accuracy (median) | cold {statistics.median(acc['mnist cold']):.4f}, warm "
        f"{statistics.median(acc['mnist warm']):.4f} | plain {statistics.median(acc['plain']):.4f} | | |"])
    record("3. Start-up and end-to-end overhead (medians of rounds)", table,
           f"Every side is a fresh process timed from its start. `cnnjobs up` itself took {up_s:.1f} s (once, not "
           "in the figures). Cold cnnjobs runs start and stop the embedded local Ray; the hand-written script starts "
           "its own with `ray.init()`. The 5,000-image job's shards were written before the rounds (a second "
           "submit of a job is a cache hit). Quickstart test accuracy: "
           f"{statistics.median(acc['cold']):.4f} cold, {statistics.median(acc['warm']):.4f} warm.")


if __name__ == "__main__":
    main()
