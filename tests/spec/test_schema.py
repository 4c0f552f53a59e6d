"""The schema is checked before anything heavy runs: validating a job imports neither torch nor ray, an image size
below the architecture's minimum is refused before a shard is written, and editors get a JSON Schema."""

from __future__ import annotations

import json
import subprocess
import sys

import jsonschema
import pytest
import yaml

from cnnjobs.cli import main
from cnnjobs.spec.docs import EDITOR_HEADER, json_schema
from tests.conftest import REPO, cli_env

SHIPPED = sorted((REPO / "jobs").glob("*.yaml"))


def python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=cli_env())


def test_loading_every_shipped_job_imports_neither_torch_nor_ray():
    done = python("import sys\nfrom cnnjobs.spec import load_job\n"
                  f"jobs = [load_job(p) for p in {[str(p) for p in SHIPPED]!r}]\n"
                  "print(len(jobs), sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'ray', 'torchvision'}))")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(len(SHIPPED)), "[]"]


def test_an_image_too_small_for_the_architecture_is_refused_before_ray_or_shards(tmp_path):
    job = yaml.safe_load((REPO / "jobs/catsdogs_small_cnn.yaml").read_text())
    job["data"]["image_size"] = 16
    job["data"]["cache_dir"] = str(tmp_path / "cache")
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    line = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if "image_size" in text)
    done = python("import sys\nfrom cnnjobs.cli import main\n"
                  f"code = main(['submit', {str(path)!r}])\n"
                  "print(code, sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'ray'}))")
    assert done.stdout.split() == ["2", "[]"], done.stdout + done.stderr
    assert done.stderr.strip().splitlines() == [
        f"cnnjobs: error: {path}:{line}: data.image_size: catsdogs_cnn needs images of at least 22 px (got [16, 16])"]
    assert not (tmp_path / "cache").exists() and not (tmp_path / "runs").exists()


def test_the_json_schema_accepts_the_shipped_jobs_and_refuses_a_typo(capsys):
    schema = json_schema()
    assert main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out) == schema
    for path in SHIPPED:
        assert path.read_text().splitlines()[0] == EDITOR_HEADER, f"{path.name}: editors find the schema this way"
        jsonschema.validate(yaml.safe_load(path.read_text()), schema)
    job = yaml.safe_load(SHIPPED[0].read_text())
    job["train"]["epocs"] = 3
    with pytest.raises(jsonschema.ValidationError, match="epocs"):
        jsonschema.validate(job, schema)
    square = yaml.safe_load((REPO / "jobs/digits_lenet.yaml").read_text())
    square["data"]["image_size"] = [32, 24]  # both spellings of a size are valid
    jsonschema.validate(square, schema)
    assert "Seed of the train/val/test split." in json.dumps(schema), "field descriptions reach the editor"
