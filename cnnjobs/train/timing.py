"""The data-wait doctor: where each worker's training time goes, and what bounds the run.

Every training step splits into waiting for the next batch (`wait`), computing it (forward, backward, optimizer
step: `compute`) and talking to the other workers or the driver (gradient all-reduce happens inside backward and
counts as compute; the per-epoch reductions and Ray's report barrier count as `sync`). `wait` is the host's time
blocked on the data iterator. On a GPU `compute` is the device's own time for each step, measured by CUDA events
recorded around it and read once per epoch (`take`): the host never waits for the device inside a step. A GPU
busier than the data is fast shows as compute (the host runs ahead until the device's queue is full), a GPU
starved of data as wait.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, TypeVar

import torch

T = TypeVar("T")
PARTS = ("wait", "compute", "sync")
INPUT_BOUND = 0.3  # a wait share above this calls the run input-bound
SYNC_BOUND = 0.3


@dataclass
class StepTimer:
    """Seconds spent waiting, computing and synchronizing since the last `take()`."""

    device: torch.device
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PARTS, 0.0))
    _events: list[tuple[str, Any, Any]] = field(default_factory=list)  # (part, start, end) CUDA events

    def timed_batches(self, batches: Iterable[T]) -> Iterator[T]:
        """`batches`, charging the time spent getting each one to `wait`."""
        iterator = iter(batches)
        while True:
            started = time.perf_counter()
            try:
                batch = next(iterator)
            except StopIteration:
                self.seconds["wait"] += time.perf_counter() - started
                return
            self.seconds["wait"] += time.perf_counter() - started
            yield batch

    @contextmanager
    def part(self, name: str) -> Iterator[None]:
        """Charge the block's time to `name`: on a GPU the device's time between two events (no waiting), on the
        CPU the wall clock."""
        if self.device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            try:
                yield
            finally:
                end.record()
                self._events.append((name, start, end))
            return
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - started

    def take(self) -> dict[str, float]:
        """The seconds so far, and start counting again (on a GPU: waits for the device once, to read the events)."""
        if self._events:
            self._events[-1][2].synchronize()
            for name, start, end in self._events:
                self.seconds[name] += start.elapsed_time(end) / 1000
            self._events.clear()
        taken, self.seconds = self.seconds, dict.fromkeys(PARTS, 0.0)
        return taken


def verdict(wait_s: float, compute_s: float, sync_s: float) -> str:
    """What bounds the run, in one line with the setting to change."""
    total = wait_s + compute_s + sync_s
    if total <= 0:
        return "no training step was timed"
    wait, sync, compute = wait_s / total, sync_s / total, compute_s / total
    if wait > INPUT_BOUND:
        return (f"input-bound: {wait:.0%} of step time waiting for data; give Ray Data more CPUs (lower "
                "scaling.cpus_per_worker, or add CPU nodes) or store smaller images (data.image_size)")
    if sync > SYNC_BOUND:
        return (f"sync-bound: {sync:.0%} of step time synchronizing workers; use fewer workers (scaling.num_workers) "
                "or more work per step (train.batch_size)")
    return f"compute-bound: {compute:.0%} of step time computing, {wait:.0%} waiting for data (the model is the limit)"
