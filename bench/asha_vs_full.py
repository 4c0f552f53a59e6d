"""Benchmark 5: a search with ASHA against running every configuration to the end, on the same grid.

Both sides run `cnnjobs.tune.search` on one Ray instance, over the same grid of learning rates x dropout for
LeNet-5 on the bundled digits (a stand-in that trains in seconds per epoch); the only difference is
`tune.scheduler: asha` vs `none`. Measured: total epochs spent, wall time, and the best validation accuracy each
side finds. Target: ASHA spends <= 30% of the epochs and its best is within 1 point of the full search's.

    python -m bench.asha_vs_full [--epochs 9] [--cpus 4]     (or: python bench/asha_vs_full.py)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # also runnable as `python bench/asha_vs_full.py`

from bench.common import ROOT, record  # noqa: E402

LRS = [0.1, 0.03, 0.01, 0.003, 0.001, 0.0003]
DROPOUTS = [0.0, 0.3]


def job_dict(out: str, epochs: int, scheduler: str) -> dict:
    """The quickstart's LeNet-5 on 16 px digits, with the benchmark's grid as its `tune:` section."""
    import yaml

    job = yaml.safe_load((ROOT / "jobs/digits_lenet.yaml").read_text())
    job["name"] = f"bench_asha_{scheduler}"
    job["data"]["image_size"] = 16
    job["train"].update(epochs=epochs, batch_size=32, optimizer="sgd", momentum=0.9)
    job["scaling"]["use_gpu"] = False
    job["output"] = {"dir": out}
    job["tune"] = {"space": {"train.lr": {"grid": LRS}, "model.dropout": {"grid": DROPOUTS}},
                   "scheduler": scheduler, "grace_period": 1, "reduction_factor": 3}
    return job


def run_side(out: str, epochs: int, scheduler: str) -> dict:
    from cnnjobs.spec import validate_job
    from cnnjobs.tune import search

    started = time.time()
    result = search(validate_job(job_dict(out, epochs, scheduler), f"bench ({scheduler})"))
    summary = result.summary
    print(f"  {scheduler}: {summary['epochs_run']} epochs, best {summary['best_metric']:.4f} "
          f"({summary['best_trial']['values']}), {time.time() - started:.0f} s", flush=True)
    return {"epochs": summary["epochs_run"], "best": summary["best_metric"], "wall": time.time() - started,
            "values": summary["best_trial"]["values"], "stopped": summary["stopped_early"],
            "concurrency": summary["concurrency"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=9, help="epochs per trial (ASHA's max_t)")
    parser.add_argument("--cpus", type=int, default=max(4, os.cpu_count() or 1),
                        help="logical CPUs of the local Ray instance (2 trials at a time with 4)")
    args = parser.parse_args()

    import ray

    ray.init(num_cpus=args.cpus, include_dashboard=True, dashboard_host="127.0.0.1", log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    with tempfile.TemporaryDirectory() as out:
        asha = run_side(out, args.epochs, "asha")
        full = run_side(out, args.epochs, "none")
    ray.shutdown()

    trials = len(LRS) * len(DROPOUTS)
    share = asha["epochs"] / full["epochs"]
    gap = 100 * (full["best"] - asha["best"])
    table = "\n".join([
        "| side | trials | epochs spent | stopped early | best val/acc | best config | wall s |",
        "|---|---|---|---|---|---|---|",
        *[f"| {name} | {trials} | {side['epochs']} | {side['stopped']} | {side['best']:.4f} | "
          f"{', '.join(f'{k}={v:g}' for k, v in side['values'].items())} | {side['wall']:.0f} |"
          for name, side in (("ASHA", asha), ("every config to the end", full))],
        "",
        f"ASHA spent **{share:.0%}** of the epochs (target <= 30%); its best is **{gap:.2f} points** "
        f"below the full search's (target within 1 point).",
    ])
    notes = (f"LeNet-5 on the bundled digits at 16 px, SGD (momentum 0.9), grid lr {LRS} x dropout {DROPOUTS}, "
             f"{args.epochs} epochs each; ASHA grace_period 1, reduction_factor 3, metric val/acc; "
             f"{asha['concurrency']} trials at a time on {args.cpus} logical CPUs. Wall time includes ~20 s of "
             "TorchTrainer start-up per trial, which early stopping does not save.")
    record("5. ASHA vs running every configuration to the end", table, notes)


if __name__ == "__main__":
    main()
