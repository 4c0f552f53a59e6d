"""What users get wrong, each answered in one line, nothing lost: the catalogue in tests/bad_input/cases.py.

Every case runs through the real command line in a workspace of its own (an earlier run, an empty shard cache, the
case's files) and must give exit code 2 and exactly one line on stderr, `cnnjobs: error: <the case's message>`,
naming the file and the key or path at fault, with no traceback; the workspace must be byte for byte as it was
(the earlier run untouched, no run folder, no shard folder, nothing extracted or unpickled).

Cases refused while the job file is read run in this process, and all of them once more in one subprocess that
must import neither torch nor ray. The others (data, runs, security) run in one subprocess that imports torch and
ray once and forks a child per case; none of them may get as far as starting Ray.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from cnnjobs.cli import main
from tests.bad_input.cases import AREAS, CASES, Case
from tests.bad_input.runner import RAY_WOULD_START, BlockRay
from tests.bad_input.workspace import (
    EARLIER_FILES,
    EARLIER_RUN,
    Prepared,
    class_folders,
    fill,
    prepare_case,
    run_batch,
    snapshot,
)
from tests.conftest import cli_env

EARLY = [case for case in CASES if case.loads_only]
LATE = [case for case in CASES if not case.loads_only]
PREFIX = "cnnjobs: error: "


def ids(cases: list[Case]) -> list[str]:
    return [f"{case.area}-{case.id}" for case in cases]


def check(prepared: Prepared, code: int, stdout: str, stderr: str, **_: object) -> None:
    """The case's one line, exit code 2, no traceback, and the workspace exactly as it was."""
    case, ws = prepared.case, prepared.ws
    assert code != RAY_WOULD_START, f"{case.id} got as far as starting Ray:\n{stderr[-2000:]}"
    assert "Traceback" not in stdout + stderr, stderr[-3000:]
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(PREFIX), stderr[-3000:]
    message = lines[0][len(PREFIX):]
    if case.regex:
        assert re.fullmatch(prepared.expected, message), f"{message!r}\n does not match\n{prepared.expected!r}"
    else:
        assert message == prepared.expected
    for named in (case.file, case.at):
        assert fill(named, prepared.values, prepared.job) in message, named
    assert code == 2
    after = snapshot(ws)
    earlier = [f"{EARLIER_RUN}/{name}" for name in EARLIER_FILES]
    assert [after.get(name) for name in earlier] == [prepared.before[name] for name in earlier], "earlier run changed"
    new = sorted(set(after) - set(prepared.before))
    assert not [name for name in new if name.startswith(("runs/", "cache/shards"))], f"written: {new}"
    gone = sorted(set(prepared.before) - set(after))
    assert after == prepared.before, f"the workspace changed: new {new}, gone {gone}"


def test_the_catalogue():
    assert len(CASES) >= 40
    assert len({case.id for case in CASES}) == len(CASES)
    assert {case.area for case in CASES} == set(AREAS)
    assert all(case.message and case.at for case in CASES)


@pytest.fixture
def no_ray(monkeypatch):
    """Ray cannot start in this process: `import ray` fails, or `ray.init` does when ray was imported already."""
    if "ray" in sys.modules:
        monkeypatch.setattr(sys.modules["ray"], "init", lambda *a, **k: pytest.fail("a case started Ray"))
    else:
        monkeypatch.setattr(sys, "meta_path", [BlockRay(), *sys.meta_path])


@pytest.mark.parametrize("case", EARLY, ids=ids(EARLY))
def test_refused_while_reading_the_job(case, tmp_path, capsys, no_ray):
    prepared = prepare_case(case, tmp_path / case.id)
    capsys.readouterr()
    try:
        code = main(prepared.argv)
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    check(prepared, code, out.out, out.err)


def test_job_file_cases_import_neither_torch_nor_ray(tmp_path):
    prepared = [prepare_case(case, tmp_path / case.id) for case in EARLY]
    results, report = run_batch(prepared, fork=False)
    for item in prepared:
        check(item, **results[item.case.id])
    assert report == {"heavy": [], "blocked": []}


def _has_gpu() -> bool:
    import torch

    return torch.cuda.device_count() > 0


@pytest.fixture(scope="module")
def late(tmp_path_factory) -> dict[str, tuple[Prepared, dict]]:
    """Every data, runs and security case, run once in one forking subprocess: (prepared case, result) by id."""
    cases = [case for case in LATE if not (case.needs_no_gpu and _has_gpu())]
    root = tmp_path_factory.mktemp("bad-input")
    prepared = [prepare_case(case, root / case.id) for case in cases]
    results, _ = run_batch(prepared, fork=True)
    return {item.case.id: (item, results[item.case.id]) for item in prepared}


@pytest.mark.parametrize("case", LATE, ids=ids(LATE))
def test_refused_before_ray_starts(case, late):
    if case.id not in late:
        pytest.skip("this machine has a GPU")
    prepared, result = late[case.id]
    check(prepared, **result)


def test_the_forked_runner_answers_as_the_console_script(late):
    """A case through `python -m cnnjobs.cli`: the same exit code and stderr as in the forked child."""
    prepared, result = late["data_path_missing_hint"]
    assert result["code"] == 2  # so it stops before Ray in a process without the runner's guard too
    done = subprocess.run([sys.executable, "-m", "cnnjobs.cli", *prepared.argv], capture_output=True, text=True,
                          cwd=prepared.ws, env=cli_env(), timeout=60)
    assert (done.returncode, done.stderr) == (result["code"], result["stderr"])
    assert snapshot(prepared.ws) == prepared.before


def test_the_earlier_run_is_a_real_one(tmp_path):
    """Its best_model.pt loads as a state dict (weights_only) and its summary as a succeeded training run."""
    import io

    import torch

    from cnnjobs.run.find import load_run
    from tests.bad_input.workspace import BEST_MODEL, run_folder

    state = torch.load(io.BytesIO(BEST_MODEL), weights_only=True)
    assert list(state) == ["backbone.0.weight"] and isinstance(state["backbone.0.weight"], torch.Tensor)
    run = load_run(str(run_folder(tmp_path / "runs/digits_lenet/20260101-000000-0001")))
    assert run.summary.status == "succeeded" and run.job().name == "digits_lenet"


def test_with_on_error_skip_a_bomb_and_an_escaping_row_are_left_out_and_listed(tmp_path):
    """What `data.on_error: fail` refuses (cases decompression_bomb, csv_row_escapes), `skip` leaves out and lists
    in the manifest (the run's skipped.csv)."""
    from cnnjobs.data.shards import prepare
    from cnnjobs.spec import DataSpec
    from tests.bad_input.makers import ROWS, images_with_a_bomb, table

    images_with_a_bomb(tmp_path)
    table([ROWS[0], ["../../../secret", *ROWS[1][1:]], ROWS[2], ["3", "Women", "Jeans", "Red"]])(tmp_path)
    (tmp_path / "data/fashion/images/3.png").write_bytes((tmp_path / "data/fashion/images/0.png").read_bytes())
    sources = {"folder": {"type": "image_folder", "path": str(tmp_path / "data/cfl")},
               "table": {"type": "csv", "path": str(tmp_path / "data/fashion/styles.csv"), "images": "images/{id}.png",
                         "labels": ["gender"]}}
    skipped = {}
    for name, source in sources.items():
        spec = DataSpec.model_validate({"source": source, "image_size": 16, "cache_dir": str(tmp_path / "cache"),
                                        "split": {"val": 0.34, "test": 0}})
        skipped[name] = prepare(spec)[0].skipped
    assert [(Path(ref).name, reason.split(":")[0]) for ref, reason in skipped["folder"]] == [
        ("bomb.png", "decompression bomb")]
    assert skipped["table"] == [[f"{tmp_path}/data/fashion/styles.csv:3", f"image path {tmp_path}/secret.png is "
                                 f"outside the table's folder {tmp_path}/data/fashion"]]


def test_a_class_missing_from_val_is_accepted_with_a_warning(tmp_path, caplog):
    """Only a class that train lacks is refused (case class_missing_from_train); one that val or test lacks is
    trained on, and a warning says that its val (or test) metrics leave it out."""
    from cnnjobs.data.shards import plan_shards
    from cnnjobs.spec import DataSpec

    class_folders(tmp_path / "cfl/train")
    class_folders(tmp_path / "cfl/val", ("car", "frog"), per_class=2)
    spec = DataSpec.model_validate({"source": {"type": "image_folder", "path": str(tmp_path / "cfl")},
                                    "image_size": 16, "cache_dir": str(tmp_path / "cache")})
    plan = plan_shards(spec)
    assert plan.tasks == {"label": ["car", "frog", "lizard"]}
    assert [record.getMessage() for record in caplog.records] == [
        f"data.source.path: the val split folder {tmp_path}/cfl/val has no images of 'lizard'; its val metrics "
        "leave them out"]
    assert not (tmp_path / "cache").exists()
