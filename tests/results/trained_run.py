"""A finished training run made without Ray, for the tests of what uses one (predict, export, visualize).

The run folder is what `cnnjobs submit` leaves: job.yaml, summary.json (typed, with the data facts and the
normalization) and best_model.pt; the weights are the architecture's seeded initial ones, plus a few plain
PyTorch steps so that predictions are not all alike.
"""

from __future__ import annotations

import io
from pathlib import Path

import torch
import yaml

from cnnjobs import storage
from cnnjobs.data.pipeline import decode_images, normalization, to_model_input
from cnnjobs.data.shards import prepare
from cnnjobs.models import build_model
from cnnjobs.models.heads import task_loss
from cnnjobs.run import layout
from cnnjobs.run.folder import RunDir, utc_now
from cnnjobs.run.summary import DataFacts, TrainSummary
from cnnjobs.spec import JobSpec, load_job
from tests.conftest import REPO


def make_trained_run(out: Path, job_file: str = "jobs/digits_lenet.yaml", *overrides: str, steps: int = 30
                     ) -> tuple[str, JobSpec]:
    """Prepare the job's shards under `out`, train its model for `steps` plain steps, write a run folder."""
    import pyarrow.parquet as pq

    job = load_job(REPO / job_file, [f"data.cache_dir={out / 'cache'}", f"output.dir={out / 'runs'}", *overrides])
    manifest, cached = prepare(job.data)
    mean, std = normalization(job.data.normalize, manifest)
    torch.manual_seed(0)
    model = build_model(job.model, {t: len(c) for t, c in manifest.tasks.items()}, manifest.image_shape[:2],
                        manifest.image_shape[2])
    table = pq.read_table(manifest.paths("train"))
    batch = decode_images(table, manifest.image_shape)
    images = torch.from_numpy(batch["image"])
    inputs = to_model_input(images, torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for step in range(steps):
        rows = slice((step * 32) % len(images), (step * 32) % len(images) + 32)
        out_ = model(inputs[rows])
        loss = sum(task_loss(o, torch.tensor(batch[f"label_{t}"][rows])) for t, o in out_.items())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    run = RunDir.create(job.output.dir, job.name, job.to_yaml())
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    storage.write_bytes(run.path(layout.BEST_MODEL), buffer.getvalue())
    summary = TrainSummary(
        job=job.name, run_id=run.run_id, run_dir=run.location, started=utc_now(), status="succeeded",
        monitor=job.train.monitor, mode=job.train.monitor_mode, arch=job.model.arch, epochs=1, epochs_run=1,
        best_epoch=1, best_model=layout.BEST_MODEL,
        data=DataFacts(shards=manifest.location, cached=cached, image_shape=list(manifest.image_shape),
                       tasks={t: len(c) for t, c in manifest.tasks.items()}, classes=manifest.tasks,
                       rows={s: manifest.num_rows(s) for s in manifest.files}, mean=list(mean), std=list(std)))
    run.write_summary(summary)
    assert yaml.safe_load((Path(run.location) / layout.JOB).read_text())["name"] == job.name
    return run.location, job
