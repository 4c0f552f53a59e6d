"""The epochs of a run as TensorBoard scalars, so that `tensorboard --logdir runs` shows every run (and, a search
writing one folder per trial, every trial) next to the others.

One event file per folder, `EVENTS`, rewritten whole from all the epoch rows at every call, rather than appended
to. The rows (metrics.csv) are the run's record of its epochs; the event file is a view of them, so rebuilding it
is idempotent: a resumed run that calls again with its earlier and new rows writes no epoch twice, and an epoch
that ran again after a resume shows its new values, as metrics.csv does. Tracking "the last epoch written" would
need state kept beside the file and keep stale values of a re-run epoch. A rewrite costs milliseconds (a few
thousand scalars) and goes through `storage.write_bytes` (a temporary file, then a rename), so it works for
`s3://` and `gs://` run folders too, and a reader never sees half a file.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from cnnjobs import storage
from cnnjobs.results.epochs import metric_value

EVENTS = "events.out.tfevents.cnnjobs"  # TensorBoard reads any file whose name contains "tfevents"


def write_epochs(folder: str, rows: list[dict[str, Any]]) -> int:
    """Write every numeric value of every epoch row (`val/acc`, `val/digit/acc`, `lr`, `time/wait_s`, ...) as a
    scalar under its name at step = the row's `epoch`, into `folder/EVENTS` (a local path or a URI), replacing
    what an earlier call wrote. Rows may hold numbers or metrics.csv's strings; a later row of the same epoch wins.
    Returns the number of scalars written."""
    from tensorboardX import SummaryWriter  # imported here: only the runs that write events need it

    epochs = {int(float(row["epoch"])): row for row in rows if metric_value(row.get("epoch")) is not None}
    # Wall times: the epochs end now, each `epoch_s` apart, so TensorBoard's "relative" axis reads training time.
    durations = [metric_value(epochs[e].get("epoch_s")) or 1.0 for e in sorted(epochs)]
    ends = [time.time() - sum(durations[i + 1:]) for i in range(len(durations))]
    written = 0
    with tempfile.TemporaryDirectory(prefix="cnnjobs-tb-") as scratch:
        writer = SummaryWriter(scratch)
        for (epoch, row), wall in zip(sorted(epochs.items()), ends):
            for name, value in row.items():
                number = metric_value(value)
                if name != "epoch" and number is not None:
                    writer.add_scalar(name, number, epoch, walltime=wall)
                    written += 1
        writer.close()
        (events,) = Path(scratch).glob("events.out.tfevents.*")
        storage.write_bytes(storage.join(folder, EVENTS), events.read_bytes())
    return written
