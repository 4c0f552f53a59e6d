"""`cnnjobs compare RUN RUN...`: the settings that differ between runs, their metrics side by side, and one figure
with their learning curves overlaid."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

from cnnjobs import storage
from cnnjobs.errors import JobError
from cnnjobs.run.find import Run, find_run
from cnnjobs.run.summary import TrainSummary


@dataclass
class Comparison:
    """Runs side by side: the job keys whose values differ (key -> one value per run) and the results."""

    runs: list[Run]
    differences: dict[str, list[Any]]
    results: dict[str, list[Any]]  # row label -> one value per run

    @property
    def labels(self) -> list[str]:
        """A short name per run: the run id, with the job name when the jobs differ."""
        jobs = {run.job_name for run in self.runs}
        return [run.run_id if len(jobs) == 1 else f"{run.job_name}/{run.run_id}" for run in self.runs]

    def to_json(self) -> dict[str, Any]:
        return {"runs": [run.path for run in self.runs], "labels": self.labels, "differences": self.differences,
                "results": self.results}


def compare(refs: list[str], root: str = "runs") -> Comparison:
    """Load the training runs `refs` (folders or ids under `root`) and line them up."""
    if len(refs) < 2:
        raise JobError("compare: give two runs or more")
    runs = [find_run(ref, root) for ref in refs]
    for ref, run in zip(refs, runs):
        if not isinstance(run.summary, TrainSummary):
            raise JobError(f"{ref}: not a training run ({run.problem or 'a search'}); compare training runs")
    jobs = [_flat(run.job().model_dump(mode="json", exclude={"tune", "description"})) for run in runs]
    keys = sorted({key for job in jobs for key in job})
    differences = {key: [job.get(key) for job in jobs] for key in keys
                   if len({repr(job.get(key)) for job in jobs}) > 1}
    summaries: list[TrainSummary] = [run.summary for run in runs]
    results: dict[str, list[Any]] = {
        "status": [s.status for s in summaries], "epochs run": [s.epochs_run for s in summaries],
        "best epoch": [s.best_epoch for s in summaries],
        "best by": [f"{s.monitor} = {s.best_metric:.4f}" if s.best_metric is not None else s.monitor
                    for s in summaries]}
    for split in ("train", "val", "test"):
        for kind in ("loss", "acc"):
            values = [getattr(s.metrics[split], kind) if split in s.metrics else None for s in summaries]
            if any(value is not None for value in values):
                results[f"{split}/{kind}"] = values
    tasks = sorted({task for s in summaries for split in s.metrics.values() for task in split.tasks})
    if len(tasks) > 1:
        for task in tasks:
            results[f"val/{task}/acc"] = [s.metrics["val"].tasks[task].acc if "val" in s.metrics
                                          and task in s.metrics["val"].tasks else None for s in summaries]
    results["duration (s)"] = [s.duration_s for s in summaries]
    return Comparison(runs, differences, results)


def curves_figure(comparison: Comparison):
    """Loss and accuracy by epoch, train (dashed) and validation (solid), one colour per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    colours = plt.get_cmap("tab10")
    for index, (run, label) in enumerate(zip(comparison.runs, comparison.labels)):
        rows = run.metrics
        for axis, kind in zip(axes, ("loss", "acc")):
            for split, style in (("train", "--"), ("val", "-")):
                points = [(float(r["epoch"]), float(r[f"{split}/{kind}"])) for r in rows if r.get(f"{split}/{kind}")]
                if points:
                    axis.plot(*zip(*points), style, color=colours(index % 10), marker="o", markersize=2.5,
                              label=f"{label} {split}")
    for axis, kind in zip(axes, ("loss", "accuracy")):
        axis.set_xlabel("epoch")
        axis.set_ylabel(kind)
        axis.grid(alpha=0.3)
        if axis.lines:
            axis.legend(fontsize=7, ncol=1 + len(comparison.runs) // 4)
    figure.suptitle(f"{len(comparison.runs)} runs: train dashed, validation solid")
    figure.tight_layout()
    return figure


def save_curves(comparison: Comparison, location: str) -> str:
    """The overlaid learning curves as a PNG at `location`."""
    import matplotlib.pyplot as plt

    figure = curves_figure(comparison)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    storage.write_bytes(location, buffer.getvalue())
    return location


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    """A job dict as dotted keys -> values (lists and scalars are leaves)."""
    if not isinstance(node, dict):
        return {prefix: node}
    flat: dict[str, Any] = {}
    for key, value in node.items():
        flat.update(_flat(value, f"{prefix}{key}." if isinstance(value, dict) else f"{prefix}{key}"))
    return flat
