"""`cnnjobs plan`'s probe: the job's own training step and validation, timed on the target for a few steps.

It runs inside `train_loop` (the same workers, devices, model and data pipeline as the real run) instead of its
epochs, and reports what it measured to the driver's tracker, which `train/plan.py` turns into the job's ETA.
"""

from __future__ import annotations

import resource
import time

import numpy as np
import torch

from cnnjobs.train.epoch import Trainee, evaluate, train_epoch

WARMUP_STEPS = 2  # the first steps warm up (and read a kept split whole): not the steady state


def probe(t: Trainee, steps: int) -> None:
    """Time `steps` training steps and as many validation batches; rank 0 reports: the seconds of a step (the
    median of the second half: the first dozens still warm up the allocator and kernels), of a validation batch,
    the first step, the share waiting for data, peak memory."""
    started = time.perf_counter()
    ends: list[float] = []

    def on_step(step: int) -> None:
        if t.device.type == "cuda":
            torch.cuda.synchronize(t.device)  # a probe measures steps as the device runs them
        ends.append(time.perf_counter())
        if step == WARMUP_STEPS:
            t.timer.take()

    train_epoch(t, 1, limit=steps, on_step=on_step)
    seconds = t.timer.take()
    durations = np.diff(ends)
    step_s = float(np.median(durations[len(durations) // 2:])) if len(durations) else ends[-1] - started
    validating = time.perf_counter()
    tally = evaluate(t, "val", steps)
    images = int(sum(c.sum() for c in tally.confusion.values()) // max(len(t.manifest.tasks), 1))
    t.reporter.probed({
        "steps": len(ends), "step_s": step_s, "first_step_s": ends[0] - started if ends else None,
        "val_images": images, "val_s": time.perf_counter() - validating,
        **{f"{part}_s": value for part, value in seconds.items()},
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "gpu_bytes": torch.cuda.max_memory_allocated(t.device) if t.device.type == "cuda" else None})
