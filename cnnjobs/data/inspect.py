"""Looking at a prepared dataset before training: counts per split, task and class, and a grid of samples."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from rich.table import Table

from cnnjobs.data.shards import Manifest

IMBALANCE = 3.0  # a class with fewer than 1/IMBALANCE of its task's largest class (in train) is flagged


def imbalanced(manifest: Manifest, task: str) -> list[str]:
    """Classes of `task` with no training images or far fewer than the largest class."""
    counts = manifest.counts["train"][task]
    largest = max(counts)
    return [name for name, n in zip(manifest.tasks[task], counts) if n * IMBALANCE < largest or n == 0]


def counts_table(manifest: Manifest, task: str) -> Table:
    """Images per class and split for one task; rare or missing classes in red."""
    splits = [split for split in ("train", "val", "test") if manifest.num_rows(split)]
    table = Table(title=f"task {task}: {len(manifest.tasks[task])} classes", title_justify="left")
    table.add_column("class")
    for split in splits:
        table.add_column(split, justify="right")
    flagged = set(imbalanced(manifest, task))
    for index, name in enumerate(manifest.tasks[task]):
        cells = [str(manifest.counts[split][task][index]) for split in splits]
        style = "red" if name in flagged else None
        table.add_row(name + (" (imbalanced)" if name in flagged else ""), *cells, style=style)
    table.add_row("[bold]total[/]", *[f"[bold]{manifest.num_rows(s)}[/]" for s in splits])
    return table


def sample_grid(manifest: Manifest, out: str | Path, count: int = 16, split: str = "train") -> Path:
    """A PNG of the first `count` images of `split` as stored in the shards, titled with their labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h, w, c = manifest.image_shape
    rows = []
    for path in manifest.paths(split):
        table = pq.ParquetFile(path).read_row_group(0)
        rows += table.slice(0, count - len(rows)).to_pylist()
        if len(rows) >= count:
            break
    side = max(1, int(np.ceil(np.sqrt(len(rows)))))
    figure, axes = plt.subplots(side, side, figsize=(2 * side, 2.2 * side), squeeze=False)
    for axis in axes.ravel():
        axis.axis("off")
    for axis, row in zip(axes.ravel(), rows):
        image = np.frombuffer(row["image"], np.uint8).reshape(h, w, c)
        axis.imshow(image[..., 0] if c == 1 else image, cmap="gray" if c == 1 else None, vmin=0, vmax=255)
        labels = [manifest.tasks[task][row[f"label_{task}"]] for task in manifest.tasks]
        axis.set_title("\n".join(labels), fontsize=8)
    figure.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=80)
    plt.close(figure)
    return out


def summary(manifest: Manifest) -> dict:
    """The counts and flags as JSON-able data (for `--json`)."""
    return json.loads(json.dumps({
        "shards": manifest.location, "image_shape": list(manifest.image_shape), "tasks": manifest.tasks,
        "counts": manifest.counts, "skipped": len(manifest.skipped),
        "imbalanced": {task: imbalanced(manifest, task) for task in manifest.tasks}}))
