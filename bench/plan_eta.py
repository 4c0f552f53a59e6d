"""Benchmark 7: `cnnjobs plan`'s ETA against the real run, for shipped jobs, as a user runs them.

For each job: `cnnjobs plan JOB --json` (its ETA, predicted from a probe of the job's own loop on the target),
then `cnnjobs submit JOB --json`, timed from the command's start to its exit. Both in fresh processes on the
embedded local Ray. A job that stops early runs fewer epochs than the ETA assumes: the table shows the epochs run,
and the ETA scaled to them. Target: within 25% of the actual time.

    python -m bench.plan_eta [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bench.common import ROOT, record
from bench.overhead import cnnjobs_command


def jobs(out: Path) -> dict[str, list[str]]:
    """Shipped jobs, with what makes them run here (the MNIST job on its 5,000-image stand-in)."""
    mnist = out / "mnist"
    subprocess.run(cnnjobs_command("data", "synth", "mnist", str(mnist), "-n", "5000"), check=True,
                   capture_output=True)
    return {"jobs/digits_lenet.yaml": [], "jobs/digits_tuned.yaml": [],
            "jobs/mnist_lenet.yaml": [f"data.source.path={mnist}"]}


def run_json(*args: str) -> tuple[dict, float]:
    started = time.time()
    done = subprocess.run(cnnjobs_command(*args, "--json"), cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1]), time.time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix="cnnjobs-bench-"))
    lines = ["| job | plan's ETA (s) | actual (s) | epochs run / planned | ETA for the epochs run (s) | error | "
             "target |", "|---|---|---|---|---|---|---|"]
    for job, extra in jobs(out).items():
        sets = [a for s in (*extra, f"output.dir={out}/runs", f"data.cache_dir={out}/cache") for a in ("--set", s)]
        subprocess.run(cnnjobs_command("data", "prepare", job, *sets), cwd=ROOT, check=True, capture_output=True)
        etas, scaled, actuals, epochs = [], [], [], []
        for index in range(args.rounds):
            plan, _ = run_json("plan", job, *sets)
            summary, actual = run_json("submit", job, *sets)
            run = summary["epochs_run"]
            etas.append(plan["eta_s"])
            scaled.append(plan["start_s"] + run * plan["epoch_s"] + plan["end_s"])
            actuals.append(actual)
            epochs.append(run)
            print(f"  {job} round {index + 1}: ETA {plan['eta_s']:.1f} s ({scaled[-1]:.1f} s for {run} epochs), "
                  f"actual {actual:.1f} s", flush=True)
        error = statistics.median(s / a - 1 for s, a in zip(scaled, actuals))
        lines.append(f"| `{job}` | {statistics.median(etas):.1f} | {statistics.median(actuals):.1f} | "
                     f"{statistics.median(epochs):.0f} / {plan['epochs']} | {statistics.median(scaled):.1f} | "
                     f"{error:+.0%} | within 25% |")
    record("7. `cnnjobs plan`: predicted vs actual job time", "\n".join(lines),
           f"Medians of {args.rounds} rounds; each round plans, then runs, the job in fresh processes on the embedded "
           "local Ray, shards already written. Error: (ETA for the epochs run) / actual - 1.")


if __name__ == "__main__":
    main()
