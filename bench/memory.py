"""Benchmark 4: peak memory and throughput of `prepare` + one epoch of ingest, at 1x and 10x the images.

Each size runs in a fresh process that starts its own local Ray; the peak RSS is the largest sum over that
process and all its descendants (Ray's GCS, raylet and workers), sampled every 0.1 s. RSS counts a shared page
(Ray's object store, shared libraries) once in every process that maps it, so the peak PSS (proportional set size:
shared pages divided among the processes sharing them) is reported too: it is what the tree really occupies.
Memory is flat when the 10x/1x ratio stays near 1 while the data grows tenfold.

    python -m bench.memory [--images 1000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.common import ROOT, alternate, record

CHILD = """
import json, sys, time
import ray
import torch
from cnnjobs.data.pipeline import build_datasets
from cnnjobs.train.cache import SplitCache, blocks_of
from cnnjobs.data.shards import prepare
from cnnjobs.spec import DataSpec
root, cache = sys.argv[1], sys.argv[2]
spec = DataSpec.model_validate({"source": {"type": "image_folder", "path": root}, "image_size": 150,
                                "channels": 3, "cache_dir": cache})
ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
ray.data.DataContext.get_current().enable_progress_bars = False
started = time.perf_counter()
manifest, _ = prepare(spec)
prepared = time.perf_counter() - started
prepared_at = time.time()
count = 0
train = build_datasets(manifest).datasets["train"]  # streamed: in_memory_bytes is 0
for batch in SplitCache(keep=False, equal=True).batches(lambda: blocks_of(train, manifest.image_shape), 64,
                                                        torch.device("cpu"), 0):
    count += len(batch["image"])
total = time.perf_counter() - started
written = sum(manifest.num_rows(split) for split in manifest.files)
print(json.dumps({"images": count, "written": written, "prepare_s": prepared, "total_s": total,
                  "prepared_at": prepared_at}))
"""


def tree_memory(root: int) -> tuple[int, int]:
    """Resident and proportional bytes (RSS, PSS) of process `root` and all its descendants, from /proc."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents[int(stat.parent.name)] = int(fields[1])
        except (OSError, IndexError, ValueError):
            continue
    members, frontier = {root}, [root]
    while frontier:
        children = [pid for pid, parent in parents.items() if parent in frontier and pid not in members]
        members.update(children)
        frontier = children
    rss = pss = 0
    for pid in members:
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
        except OSError:
            continue
        fields = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in rollup[1:] if line.endswith("kB")}
        rss, pss = rss + fields.get("Rss", 0), pss + fields.get("Pss", 0)
    return rss, pss


def run_once(root: Path, work: Path, results: dict[str, list[dict]], label: str) -> float:
    cache = tempfile.mkdtemp(dir=work)  # a cold cache: prepare writes the shards every time
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(root), cache], cwd=ROOT, stdout=subprocess.PIPE,
                             text=True)
    samples: list[tuple[float, int, int]] = []  # (time, RSS, PSS) of the tree

    def sample() -> None:
        while child.poll() is None:
            samples.append((time.time(), *tree_memory(child.pid)))
            time.sleep(0.1)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    out, _ = child.communicate()
    thread.join()
    measured = json.loads(out.strip().splitlines()[-1])
    measured["peak_rss_mib"] = max(rss for _, rss, _ in samples) / 2**20
    measured["peak_pss_mib"] = max(pss for _, _, pss in samples) / 2**20
    # the peaks of the two phases: Ray's start and writing the shards, then the streamed epoch
    measured["prepare_rss_mib"] = max(rss for at, rss, _ in samples if at <= measured["prepared_at"]) / 2**20
    measured["epoch_rss_mib"] = max((rss for at, rss, _ in samples if at > measured["prepared_at"]),
                                    default=0) / 2**20
    results[label].append(measured)
    return measured["peak_rss_mib"]


def main() -> None:
    from cnnjobs.data.synth import synth

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cnnjobs-bench-"))
    # synth("catsdogs") keeps 2/3 in train/: ask for 1.5x so the train split has `images` images.
    roots = {"1x": synth("catsdogs", work / "small", n=int(args.images * 1.5)),
             "10x": synth("catsdogs", work / "large", n=int(args.images * 15))}
    results: dict[str, list[dict]] = {"1x": [], "10x": []}
    peaks = alternate({label: (lambda label=label: run_once(roots[label], work, results, label))
                       for label in roots}, args.rounds)
    pss = {label: [r["peak_pss_mib"] for r in runs] for label, runs in results.items()}
    phase = {key: {label: statistics.median(r[key] for r in runs) for label, runs in results.items()}
             for key in ("prepare_rss_mib", "epoch_rss_mib")}
    lines = ["| size | train images | peak RSS (MiB) | peak PSS (MiB) | peak RSS writing shards / in the epoch (MiB) "
             "| shard writing (img/s) | prepare + one epoch (img/s) |", "|---|---|---|---|---|---|---|"]
    for label, runs in results.items():
        lines.append(f"| {label} | {runs[0]['images']} | {statistics.median(peaks[label]):.0f} | "
                     f"{statistics.median(pss[label]):.0f} | {phase['prepare_rss_mib'][label]:.0f} / "
                     f"{phase['epoch_rss_mib'][label]:.0f} | "
                     f"{statistics.median(r['written'] / r['prepare_s'] for r in runs):.0f} | "
                     f"{statistics.median(r['images'] / r['total_s'] for r in runs):.0f} |")
    ratio = statistics.median(peaks["10x"]) / statistics.median(peaks["1x"])
    pss_ratio = statistics.median(pss["10x"]) / statistics.median(pss["1x"])
    by_phase = " / ".join(f"{values['10x'] / values['1x']:.2f}" for values in phase.values())
    lines.append(f"| **10x / 1x** | | **{ratio:.2f}** (target <= 1.2) | {pss_ratio:.2f} | {by_phase} | | |")
    record("4. Memory and throughput at 1x and 10x the images", "\n".join(lines),
           "150x150 RGB JPEG cats/dogs stand-in (`cnnjobs data synth catsdogs`); each run writes the shards into a "
           "cold cache, then streams one epoch of the train split (read, decode, batch) to the driver; the peak is "
           "also split by phase (Ray's start and the shard writing; the epoch).")


if __name__ == "__main__":
    main()
