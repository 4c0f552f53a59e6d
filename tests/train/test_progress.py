"""The driver's polling loop never loses the epoch that ends as `fit()` returns (no Ray: the timing is forced)."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

from cnnjobs.train import runner
from cnnjobs.train.progress import Snapshot


class _LastEpochAtTheEnd:
    """A trainer and a progress tracker arranged in the worst order: the first poll returns an empty snapshot,
    and only once it has been taken does training record its one epoch and return from `fit()`."""

    def __init__(self) -> None:
        self.now = Snapshot()
        self.polled = threading.Event()
        self.finished = threading.Event()
        self.poll = SimpleNamespace(remote=self._poll)

    def fit(self) -> None:
        self.polled.wait(timeout=10)
        self.now.epochs.append({"epoch": 1, "val/acc": 0.5})
        self.finished.set()

    def _poll(self) -> Snapshot:
        taken = Snapshot(epochs=list(self.now.epochs))
        if not self.polled.is_set():
            self.polled.set()
            self.finished.wait(timeout=10)  # fit() has returned before the loop looks at its thread again
        return taken


def test_the_epoch_that_ends_with_fit_is_recorded(monkeypatch: Any) -> None:
    # Once the last poll came before fit() returned, and a 1-epoch run was summarized with no epochs at all.
    race = _LastEpochAtTheEnd()
    written: list[list[dict[str, Any]]] = []
    monkeypatch.setattr(runner, "ray", SimpleNamespace(get=lambda value, timeout=None: value))
    run = SimpleNamespace(write_metrics=lambda rows: written.append(list(rows)))
    rows: list[dict[str, Any]] = []
    runner._fit_with_progress(SimpleNamespace(fit=race.fit), race, run, rows, lambda *args: None, None)
    assert rows == [{"epoch": 1, "val/acc": 0.5}]
    assert written[-1] == rows  # and metrics.csv holds it
