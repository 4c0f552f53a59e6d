"""Benchmark 5: `jobs/arch_search.yaml` with ASHA against running every sampled configuration to the end.

Both sides run `cnnjobs.tune.tuner` on one Ray instance over the same trials: the job's seeded sampler draws the
same architectures x learning rates for both; the only difference is `tune.scheduler: asha` vs `none`. Each round
uses another `tune.seed` (another draw of learning rates), sides alternating ASHA, full, ASHA, full, ...
Measured per round: epochs spent, wall time, and the best validation accuracy each side finds.
Target: ASHA spends <= 30% of the epochs and its best is within 1 point of the full search's.

    python -m bench.asha_vs_full [--rounds 3] [--cpus 4] [--keep DIR]     (or: python bench/asha_vs_full.py)

With `--keep DIR` the searches' run folders stay in DIR: `python -m bench.asha_replay DIR/bench_asha_none/RUN`
then replays ASHA with other settings on the full search's curves.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # also runnable as `python bench/asha_vs_full.py`

from bench.common import ROOT, record  # noqa: E402

JOB = ROOT / "jobs/arch_search.yaml"


def job_dict(out: str, scheduler: str, seed: int) -> dict:
    """The architecture search job as it ships, with the side's scheduler and the round's sampling seed."""
    import yaml

    job = yaml.safe_load(JOB.read_text())
    job["name"] = f"bench_asha_{scheduler}"
    job["scaling"]["use_gpu"] = False
    job["output"] = {"dir": out}
    job["tune"].update(scheduler=scheduler, seed=seed)
    return job


def run_side(out: str, scheduler: str, seed: int) -> dict:
    """One search; its epochs, best metric and winning values."""
    from cnnjobs.spec import validate_job
    from cnnjobs.tune import search

    started = time.time()
    summary = search(validate_job(job_dict(out, scheduler, seed), f"bench ({scheduler})")).summary
    side = {"epochs": summary["epochs_run"], "best": summary["best_metric"], "wall": time.time() - started,
            "values": summary["best_trial"]["values"], "stopped": summary["stopped_early"],
            "concurrency": summary["concurrency"]}
    print(f"  seed {seed} {scheduler}: {side['epochs']} epochs, best {side['best']:.4f} ({side['values']}), "
          f"{side['wall']:.0f} s", flush=True)
    return side


def config(values: dict) -> str:
    return ", ".join(f"{k}={v:.2g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each with its own tune.seed (0, 1, ...)")
    parser.add_argument("--cpus", type=int, default=max(4, os.cpu_count() or 1),
                        help="logical CPUs of the local Ray instance (2 trials at a time with 4)")
    parser.add_argument("--keep", help="keep the searches' run folders here (default: a temporary folder)")
    args = parser.parse_args()

    import ray

    ray.init(num_cpus=args.cpus, include_dashboard=True, dashboard_host="127.0.0.1", log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    rounds = []
    with tempfile.TemporaryDirectory() as scratch:
        out = args.keep or scratch
        for seed in range(args.rounds):
            rounds.append((seed, run_side(out, "asha", seed), run_side(out, "none", seed)))
    ray.shutdown()

    from cnnjobs.spec import load_job
    from cnnjobs.tune import num_trials

    shipped = load_job(JOB).tune
    count = num_trials(shipped)
    shares = [asha["epochs"] / full["epochs"] for _, asha, full in rounds]
    gaps = [100 * (full["best"] - asha["best"]) for _, asha, full in rounds]
    lines = ["| round (tune.seed) | side | trials | epochs spent | stopped early | best val/acc | best config | "
             "wall s |",
             "|---|---|---|---|---|---|---|---|"]
    for seed, asha, full in rounds:
        for name, side in (("ASHA", asha), ("every config to the end", full)):
            lines.append(f"| {seed} | {name} | {count} | {side['epochs']} | {side['stopped']} | "
                         f"{side['best']:.4f} | {config(side['values'])} | {side['wall']:.0f} |")
    lines += ["", f"Per round, ASHA's share of the epochs: {', '.join(f'{s:.0%}' for s in shares)}; its best below "
              f"the full search's by: {', '.join(f'{g:.2f}' for g in gaps)} points.", "",
              f"Median: ASHA spent **{statistics.median(shares):.0%}** of the epochs (target <= 30%); its best is "
              f"**{statistics.median(gaps):.2f} points** below the full search's (target within 1 point); "
              f"worst round {max(gaps):.2f} points."]
    notes = (f"`jobs/arch_search.yaml` as shipped (bundled digits at 32 px, {count} trials: "
             f"{', '.join(shipped.space['model.arch'].grid)} x {shipped.num_samples} learning rates, loguniform in "
             f"{list(shipped.space['train.lr'].loguniform)}; ASHA grace_period "
             f"{shipped.grace_period}, reduction_factor {shipped.reduction_factor:g}, metric val/acc); "
             f"{rounds[0][1]['concurrency']} trials at a time on {args.cpus} logical CPUs. Wall time includes "
             "~20 s of TorchTrainer start-up per trial, which early stopping does not save.")
    record("5. ASHA vs running every configuration to the end", "\n".join(lines), notes)


if __name__ == "__main__":
    main()
