"""A folder per bad-input case: an earlier run, an empty shard cache, the case's job file and data; and a snapshot
of every byte in it, taken before and after the command, that shows nothing was written, moved or lost."""

from __future__ import annotations

import atexit
import base64
import copy
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
EARLIER_RUN = "runs/digits_lenet/20260101-000000-0001"  # relative to the workspace
EARLIER_FILES = ("job.yaml", "summary.json", "metrics.csv", "best_model.pt")
DROP = object()  # a change that removes the key


def summary(run_dir: Path, **changes: Any) -> dict:
    """A succeeded training run's summary.json content (schema 2), as `cnnjobs submit` writes it."""
    return {"schema_version": 2, "kind": "train", "job": "digits_lenet", "run_id": run_dir.name,
            "run_dir": str(run_dir), "status": "succeeded", "started": "2026-01-01T00:00:00",
            "finished": "2026-01-01T00:00:30", "duration_s": 30.0, "monitor": "val/acc", "mode": "max",
            "epochs": 2, "epochs_run": 2, "best_epoch": 2, "best_metric": 0.9, "arch": "lenet5",
            "best_model": "best_model.pt", "metrics": {"val": {"loss": 0.3, "acc": 0.9}},
            "data": {"shards": "/nowhere", "image_shape": [28, 28, 1], "tasks": {"digit": 10},
                     "classes": {"digit": [str(c) for c in range(10)]}, "mean": [0.3], "std": [0.4]}, **changes}


# `torch.save({"backbone.0.weight": torch.ones(2, 2)})`, zlib-compressed: written without importing torch, so
# that the job-file cases stay fast (a test loads it back with weights_only=True).
BEST_MODEL = zlib.decompress(base64.b64decode(
    "eNqlVM+L00AUniRtWqN2WxEW97DnCprmR9PuKm4hSC452K24lL2ENJ1tw2abnWTaRUFYEBf8J/wzFO+CR9GzB9GL4sGrRyeJm52k"
    "tOvqwPBI8r7vffPyvemaXAGAchnMrSq4BuzAGbsz2Bja2BYP9z1Dr4DdzDpmnyLQr5H8ge3sD/wJFCXxCLqjMUaMg31CIFpT7Hqh"
    "YAVwMHW9oYXhJPQDa6YIiK3X+yUCDkmmPYKISyCC4fk2fpi8FFChz5AcCRX7HInO4RTxZgGj0rYJTNZkT1CZBOYEXXrhOL7nQQe7"
    "/iQUHgRDGMDhfdfBAhJu9tBljK700NVQ7Jql8psvM+cVoYt2d2EXVkEx7YK45wcHNrZmMAhJAUNnwK4cUb3++elZpJBZSrUG2mdU"
    "fw5s2Z47mhzACTZ0Ndfav1qtZiSgc4S+s6QEu1RADXRSAYPHGPpRfwz97r/UPV2ei7EHIw3P7329wZMq/FINFbCVcVVDMvQ7/yEA"
    "gOMOvSMlO9fH36qxg5cpWQFqqiT9o42LSlGFqOKHl6NH5/d/HShnBogPH8LAJQ54YkeGtdyhoYsXFCBrbWVD3tzUZHlDa7aaqqS0"
    "pGa7qWiaqmmKJslyq6VqsU1/lLfe1omOeqySicSmOulpqM4pz98DeTQ9AKsZJM+ARfOTJ6FNvJYh2aZJ5iYnz0MbsZbh+UjxpAOQ"
    "h9PuqWTgOyzIeTePpX2wksF+prALzk//nvUMuMeBc4zTNXn+1qnNuNspspSL75kk/uKSSHDxp3fF5Dm5wYp8ginF+Unub1urVtg="))


def run_folder(run_dir: Path, files: tuple[str, ...] = EARLIER_FILES, **changes: Any) -> Path:
    """A run folder of the digits job holding `files`."""
    run_dir.mkdir(parents=True)
    contents = {
        "job.yaml": lambda: (REPO / "jobs/digits_lenet.yaml").read_bytes(),
        "summary.json": lambda: json.dumps(summary(run_dir, **changes), indent=1).encode(),
        "metrics.csv": lambda: b"epoch,train/loss,val/loss,val/acc\n1,1.2,0.6,0.8\n2,0.5,0.3,0.9\n",
        "best_model.pt": lambda: BEST_MODEL,
    }
    for name in files:
        (run_dir / name).write_bytes(contents[name]())
    return run_dir


def snapshot(root: Path) -> dict[str, str]:
    """Every folder, file (its SHA-256) and link under `root`, by relative path."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder, name)
            key = str(path.relative_to(root))
            if path.is_symlink():
                found[key] = f"link -> {os.readlink(path)}"
            elif path.is_dir():
                found[key] = "folder"
            else:
                found[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def run_folders(root: Path) -> list[str]:
    """The run folders (`<job>/<run id>/`) under `root/runs`."""
    return sorted(str(p.relative_to(root)) for p in (root / "runs").glob("*/*") if p.is_dir())


def _fill_values(value: Any, values: dict[str, str]) -> Any:
    if isinstance(value, str):
        for key, text in values.items():
            value = value.replace(f"{{{key}}}", text)
        return value
    if isinstance(value, dict):
        return {key: _fill_values(item, values) for key, item in value.items()}
    if isinstance(value, list):
        return [_fill_values(item, values) for item in value]
    return value


def write_job(ws: Path, job: str | dict | None, base: str, values: dict[str, str]) -> Path:
    """The case's job file: YAML text as given, or the shipped job `base` with its output and cache in the
    workspace and `job`'s changes (dotted key -> value, DROP to remove) applied; `{name}` is `values[name]`."""
    path = ws / "job.yaml"
    if isinstance(job, str):
        path.write_text(_fill_values(job, values))
        return path
    raw = yaml.safe_load((REPO / base).read_text())
    raw["output"] = {"dir": str(ws / "runs")}
    raw["data"]["cache_dir"] = str(ws / "cache")
    for key, value in (job or {}).items():
        node = raw
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        if value is DROP:
            node.pop(last, None)
        else:
            node[last] = _fill_values(copy.deepcopy(value), values)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def line_of(text: str, dotted: str) -> int:
    """The 1-based line of the key `dotted` in YAML `text` (composed by PyYAML, not by cnnjobs' loader)."""
    node, parts = yaml.compose(text), dotted.split(".")
    while parts:  # a key may hold dots itself (tune.space's `train.lr`): the longest one that matches
        key, node, parts = next((k, v, parts[n:]) for n in range(len(parts), 0, -1) for k, v in node.value
                                if k.value == ".".join(parts[:n]))
    return key.start_mark.line + 1


def fill(template: str, values: dict[str, str], job: Path, regex: bool = False) -> str:
    """`template` with `{name}` replaced by `values[name]` and `{line[dotted.key]}` by the key's line in the job
    file (each escaped for a regex when `regex`); other braces, such as a CSV template's `{id}`, stay."""
    def value(match: re.Match) -> str:
        if match[2] is not None:
            text = str(line_of(job.read_text(), match[2]))
        elif match[1] in values:
            text = values[match[1]]
        else:
            return match[0]
        return re.escape(text) if regex else text

    return re.sub(r"\{(\w+|line\[([^\]]+)\])\}", value, template)


# ------------------------------------------------------------------ data


def image(path: Path, colour: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (20, 20)) -> Path:
    """A small solid PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), colour, np.uint8)).save(path)
    return path


def class_folders(root: Path, classes: tuple[str, ...] = ("car", "frog", "lizard"), per_class: int = 4) -> Path:
    """`root/<class>/<class>_<i>.png`."""
    for index, name in enumerate(classes):
        for i in range(per_class):
            image(root / name / f"{name}_{i}.png", colour=(40 + 60 * index, 80, 200 - 60 * index))
    return root


@functools.cache
def _template(kind: str) -> Path:
    """Made once per process in a temporary folder: the earlier run, or shards
    (3 classes, 16x16 grayscale) written by cnnjobs itself, serially in this process: no Ray."""
    folder = Path(tempfile.mkdtemp(prefix=f"cnnjobs-bad-input-{kind}-"))
    atexit.register(shutil.rmtree, folder, True)
    if kind == "run":
        return run_folder(folder / "run")
    from cnnjobs.data.shards import prepare
    from cnnjobs.spec import DataSpec

    class_folders(folder / "images", per_class=6)
    spec = DataSpec.model_validate({"source": {"type": "image_folder", "path": str(folder / "images")},
                                    "image_size": 16, "channels": 1, "cache_dir": str(folder / "cache")})
    manifest, _ = prepare(spec)
    return Path(manifest.location)


def copy_shards(ws: Path) -> Path:
    """A copy of cnnjobs shards (3 classes, 16x16 grayscale) at `ws/data/shards`."""
    return Path(shutil.copytree(_template("shards"), ws / "data" / "shards"))


@dataclass
class Prepared:
    """A case ready to run in its workspace: the job file, the placeholder values, the command line, and the
    snapshot of the workspace before the command."""

    case: Any
    ws: Path
    job: Path
    values: dict[str, str]
    argv: list[str]
    before: dict[str, str]

    @property
    def expected(self) -> str:
        """The message the case expects (a regex when the case says so)."""
        return fill(self.case.message, self.values, self.job, self.case.regex)


def prepare_case(case: Any, ws: Path) -> Prepared:
    """Make `ws`: the earlier run, an empty cache, the case's files and job file."""
    shutil.copytree(_template("run"), ws / EARLIER_RUN)
    (ws / "cache").mkdir()
    values = {"ws": str(ws)}
    values.update((case.make(ws) if case.make else None) or {})
    job = write_job(ws, case.job, case.base, values)
    values["job"] = str(job)
    argv = [fill(arg, values, job) for arg in case.args]
    return Prepared(case, ws, job, values, argv, snapshot(ws))


def run_batch(prepared: list[Prepared], fork: bool, timeout: int = 600) -> tuple[dict[str, dict], dict]:
    """Run the cases with tests/bad_input/runner.py in one subprocess: results by case id, and what else the
    runner reports (`heavy`, `blocked`)."""
    with tempfile.TemporaryDirectory() as folder:
        cases, results = Path(folder, "cases.json"), Path(folder, "results.json")
        cases.write_text(json.dumps([{"id": p.case.id, "argv": p.argv, "cwd": str(p.ws)} for p in prepared]))
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # never another instance
        done = subprocess.run([sys.executable, str(Path(__file__).with_name("runner.py")), str(cases), str(results),
                               *(["--fork"] if fork else [])], capture_output=True, text=True, cwd=REPO, env=env,
                              timeout=timeout)
        assert done.returncode == 0, done.stdout + done.stderr
        report = json.loads(results.read_text())
    return {result["id"]: result for result in report.pop("results")}, report
