"""What every benchmark shares: the machine's description, A/B rounds, medians, and BENCHMARKS.md entries."""

from __future__ import annotations

import os
import platform
import shlex
import statistics
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "BENCHMARKS.md"


def machine() -> str:
    """Cores, memory, GPU and library versions, on one line."""
    import ray
    import torch
    import torchvision

    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{os.cpu_count()} cores, {memory:.0f} GiB, {gpu}; Python {platform.python_version()}, "
            f"torch {torch.__version__}, torchvision {torchvision.__version__}, Ray {ray.__version__}")


def alternate(sides: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Run the sides A B A B ... for `rounds` rounds, so that machine noise hits both alike."""
    results: dict[str, list[float]] = {name: [] for name in sides}
    for index in range(rounds):
        for name, run in sides.items():
            value = run()
            results[name].append(value)
            print(f"  round {index + 1} {name}: {value:.4g}", flush=True)
    return results


def median_ratio(a: list[float], b: list[float]) -> float:
    """Median over rounds of a/b, pairing each round's two measurements."""
    return statistics.median(x / y for x, y in zip(a, b))


def record(title: str, table: str, notes: str = "") -> None:
    """Print a result table and append it to BENCHMARKS.md with date, machine and the exact command."""
    module = "bench." + Path(sys.argv[0]).stem
    command = " ".join(shlex.quote(arg) for arg in ["python", "-m", module, *sys.argv[1:]])
    entry = (f"\n### {title}\n\n{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; {machine()}\n\n"
             f"Command: `{command}`\n\n{table}\n" + (f"\n{notes}\n" if notes else ""))
    print(entry)
    if not RESULTS.exists():
        RESULTS.write_text("# Benchmarks\n\nEach entry is appended by a script in `bench/` (see README, Benchmarks).\n")
    with RESULTS.open("a") as out:
        out.write(entry)
