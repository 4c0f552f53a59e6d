"""Benchmark 9: finding a job's cached shards on a tree of 100,000 image files, with and without listing the source.

A submit whose shards are cached used to list the whole source (a `stat` of every file, for the fingerprint in the
cache key) before it looked the shards up. Now a quick fingerprint of the source's folders leads to the entry
(`cnnjobs/data/shards.py`); the full listing happens only when the folders changed. Both sides here are
`plan_shards` on the same cached entry, alternating: "listing" with the quick index removed first (so it lists the
source, as every submit did before), "quick" with it in place. On this machine's local disk with a warm page cache;
on a network filesystem each `stat` is a round trip, which is where the listing's minutes come from.

    python -m bench.cache_lookup [--files 100000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bench.common import alternate, median_ratio, record
from cnnjobs import storage
from cnnjobs.data.shards import INDEX, plan_shards, prepare
from cnnjobs.spec import DataSpec

CLASSES = 10


def tree(root: Path, files: int) -> Path:
    """`files` small PNGs in `CLASSES` class folders (the image_folder layout), each an 8x8 gray image."""
    for index in range(files):
        label = index % CLASSES
        buffer = io.BytesIO()
        Image.fromarray(np.full((8, 8), 20 * label + index % 7, np.uint8)).save(buffer, format="PNG")
        folder = root / f"class{label}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{index:06d}.png").write_bytes(buffer.getvalue())
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cnnjobs-bench-") as scratch:
        root = tree(Path(scratch) / "images", args.files)
        spec = DataSpec.model_validate({"source": {"type": "image_folder", "path": str(root)}, "image_size": 8,
                                        "channels": 1, "cache_dir": str(Path(scratch) / "cache")})
        started = time.perf_counter()
        manifest, _ = prepare(spec)
        print(f"shards written in {time.perf_counter() - started:.1f} s: {manifest.location}", flush=True)
        index = Path(storage.local_path(spec.cache_dir)) / INDEX

        def timed(quick: bool) -> float:
            if not quick:
                for entry in index.glob("*.json"):
                    entry.unlink()
            started = time.perf_counter()
            plan = plan_shards(spec)
            assert plan.cached is not None and plan.cached.location == manifest.location
            assert (plan.source is None) == quick, "the quick side must not list, the other must"
            return time.perf_counter() - started

        results = alternate({"listing": lambda: timed(False), "quick": lambda: timed(True)}, args.rounds)
    listing, quick = (statistics.median(results[side]) for side in ("listing", "quick"))
    table = ("| lookup of cached shards | median s | min s | max s |\n|---|---|---|---|\n"
             + "\n".join(f"| {side} | {statistics.median(values):.3f} | {min(values):.3f} | {max(values):.3f} |"
                         for side, values in results.items())
             + f"\n\nlisting / quick: **{median_ratio(results['listing'], results['quick']):.1f}x** "
               f"({listing:.2f} s vs {quick:.3f} s, {args.files:,} files)")
    record(f"9. Finding cached shards: listing the source vs the quick fingerprint ({args.files:,} files)", table)


if __name__ == "__main__":
    main()
