"""`cnnjobs export`: the exported model computes what the run's model does, and predicts an image file without
cnnjobs from its preprocessing JSON alone; bad runs, a wrong export and missing packages are one-line errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from rich.console import Console

from cnnjobs.cli.common import Parser
from cnnjobs.cli.export import add_commands
from cnnjobs.data.pipeline import decode_images
from cnnjobs.data.shards import Manifest
from cnnjobs.errors import JobError
from cnnjobs.results import export as export_module
from cnnjobs.results.export import TOLERANCE, ExportMismatch, export
from cnnjobs.results.trained import TrainedModel, load_trained
from cnnjobs.run import layout
from tests.conftest import stand_in
from tests.results.trained_run import make_trained_run

FORMATS = ["torchscript", "onnx"]
CASES = ["digits", "fashion", "catsdogs"]  # one softmax task; three tasks; one sigmoid task (one logit)

# torch 2.14 deprecates TorchScript; these tests load it as a user of the export would.
pytestmark = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.load` is deprecated:FutureWarning")


def _make_run(case: str, tmp: Path) -> str:
    if case == "digits":
        return make_trained_run(tmp)[0]
    if case == "fashion":
        csv = stand_in("fashion", tmp / "data", n=120)
        return make_trained_run(tmp, "jobs/fashion_multi.yaml", f"data.source.path={csv}", "model.arch=cfl_cnn",
                                "data.image_size=[40, 30]", steps=10)[0]
    folder = stand_in("catsdogs", tmp / "data", n=40)
    return make_trained_run(tmp, "jobs/catsdogs_small_cnn.yaml", f"data.source.path={folder}",
                            "data.source.download=null", "data.image_size=32", "model.width=0.25", steps=5)[0]


@pytest.fixture(scope="module")
def run_of(tmp_path_factory):
    """case -> a finished run folder, made once per module."""
    made: dict[str, str] = {}

    def get(case: str) -> str:
        if case not in made:
            made[case] = _make_run(case, tmp_path_factory.mktemp(case))
        return made[case]

    return get


@pytest.fixture(scope="module")
def exported(run_of):
    """(case, format) -> the export to the run's default place, made once per module."""
    made = {}

    def get(case: str, fmt: str):
        if (case, fmt) not in made:
            made[case, fmt] = export(run_of(case), fmt)
        return made[case, fmt]

    return get


def _split_images(trained: TrainedModel) -> torch.Tensor:
    """Every image of the run's test split (val when empty), read here rather than by the export's own check."""
    manifest = Manifest.load(trained.summary.data.shards)
    split = "test" if manifest.num_rows("test") else "val"
    return torch.from_numpy(decode_images(pq.read_table(manifest.paths(split)), manifest.image_shape)["image"])


def _predict(fmt: str, model: str, inputs: torch.Tensor, names: list[str]) -> list[np.ndarray]:
    if fmt == "torchscript":
        with torch.no_grad():
            return [out.numpy() for out in torch.jit.load(model)(inputs)]
    import onnxruntime

    session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[0] == "batch"  # the batch dimension is dynamic
    return session.run(names, {"images": inputs.numpy()})


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("case", CASES)
def test_export_gives_the_runs_probabilities(exported, case, fmt):
    result = exported(case, fmt)
    trained = load_trained(str(Path(result.model).parents[1]))
    assert Path(result.model) == Path(trained.run.path) / "export" / ("model.pt" if fmt == "torchscript" else
                                                                      "model.onnx")
    spec = json.loads(Path(result.preprocessing).read_text())
    names = [output["name"] for output in spec["outputs"]]
    assert names == list(trained.preprocessing.classes)
    assert [o["classes"] for o in spec["outputs"]] == list(trained.preprocessing.classes.values())
    assert spec["source"]["run_id"] == trained.summary.run_id
    assert result.images > 1 and result.max_difference <= TOLERANCE

    images = _split_images(trained)
    expected = trained.probabilities(images)
    for batch in (slice(None), slice(0, 1)):  # the whole split, and a batch of one
        outputs = _predict(fmt, result.model, trained.inputs(images[batch]), names)
        for task, out in zip(names, outputs, strict=True):
            assert out.shape == (len(images[batch]), len(trained.preprocessing.classes[task]))
            np.testing.assert_allclose(out, expected[task][batch].numpy(), rtol=0, atol=TOLERANCE)


_PREPROCESS = '''
import json, sys
import numpy as np
from PIL import Image, ImageOps

spec = json.load(open(sys.argv[1]))
image, norm = spec["image"], spec["normalize"]
with Image.open(sys.argv[3]) as opened:
    picture = ImageOps.exif_transpose(opened)
    if picture.mode == "P":
        picture = picture.convert("RGBA" if "transparency" in picture.info else "RGB")
    if picture.mode in ("RGBA", "LA", "PA"):
        picture = Image.alpha_composite(Image.new("RGBA", picture.size, (255, 255, 255, 255)),
                                        picture.convert("RGBA"))
    picture = picture.convert(image["mode"])
    if picture.size != (image["width"], image["height"]):
        picture = picture.resize((image["width"], image["height"]), Image.Resampling.BILINEAR)
    pixels = np.asarray(picture, dtype=np.uint8).reshape(image["height"], image["width"], image["channels"])
x = pixels.transpose(2, 0, 1).astype(np.float32) / 255
x = (x - np.float32(norm["mean"]).reshape(-1, 1, 1)) / np.float32(norm["std"]).reshape(-1, 1, 1)
x = x[None]
'''
_RUN = {
    "onnx": '''
import onnxruntime
session = onnxruntime.InferenceSession(sys.argv[2], providers=["CPUExecutionProvider"])
outputs = session.run([o["name"] for o in spec["outputs"]], {spec["input"]["name"]: x})
assert not any(name.split(".")[0] in ("cnnjobs", "torch") for name in sys.modules)
''',
    "torchscript": '''
import torch
with torch.no_grad():
    outputs = [out.numpy() for out in torch.jit.load(sys.argv[2])(torch.from_numpy(x))]
assert not any(name.split(".")[0] == "cnnjobs" for name in sys.modules)
''',
}
_REPORT = '''
print(json.dumps({o["name"]: {"class": o["classes"][int(p[0].argmax())], "probabilities": p[0].tolist()}
                  for o, p in zip(spec["outputs"], outputs)}))
'''


def _image_file(case: str, trained: TrainedModel, out: Path) -> Path:
    """An image file as a user has one, different from the shards: another size, mode or orientation."""
    if case == "digits":  # RGBA with a transparent border, twice the size: alpha on white, grayscale, resize
        digit = Image.fromarray(_split_images(trained)[3, 0].numpy()).resize((56, 42)).convert("RGBA")
        alpha = np.zeros((42, 56), np.uint8)
        alpha[4:-4, 4:-4] = 255
        digit.putalpha(Image.fromarray(alpha))
        digit.save(out / "digit.png")
        return out / "digit.png"
    data = Path(trained.job.data.source.path).parent
    if case == "fashion":  # a product photo stored sideways with its EXIF orientation: must be turned upright
        with Image.open(min((data / "images").glob("*.jpg"))) as photo:
            exif = Image.Exif()
            exif[0x0112] = 6  # "rotate 90 clockwise to display"
            photo.transpose(Image.Transpose.ROTATE_90).save(out / "photo.jpg", exif=exif)
        return out / "photo.jpg"
    with Image.open(min(data.rglob("*.jpg"))) as photo:  # a palette PNG whose commonest colour is transparent
        palette = photo.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
        palette.save(out / "pet.png", transparency=int(np.bincount(np.asarray(palette).ravel()).argmax()))
    return out / "pet.png"


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("case", CASES)
def test_exported_model_predicts_an_image_file_without_cnnjobs(exported, case, fmt, tmp_path):
    result = exported(case, fmt)
    trained = load_trained(str(Path(result.model).parents[1]))
    image = _image_file(case, trained, tmp_path)
    script = _PREPROCESS + _RUN[fmt] + _REPORT
    done = subprocess.run([sys.executable, "-I", "-c", script, result.preprocessing, result.model, str(image)],
                          check=False, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    predicted = json.loads(done.stdout.strip().splitlines()[-1])

    expected = trained.probabilities(torch.from_numpy(trained.pixels(image))[None])
    for task, names in trained.preprocessing.classes.items():
        assert predicted[task]["class"] == names[int(expected[task][0].argmax())]
        np.testing.assert_allclose(predicted[task]["probabilities"], expected[task][0].numpy(), rtol=0,
                                   atol=TOLERANCE)


@pytest.mark.parametrize("fmt", FORMATS)
def test_unfinished_or_unknown_run_is_a_one_line_error(run_of, fmt, tmp_path):
    unfinished = tmp_path / "runs" / "digits_lenet" / "unfinished"
    shutil.copytree(run_of("digits"), unfinished, ignore=shutil.ignore_patterns("export"))
    (unfinished / layout.BEST_MODEL).unlink()
    summary = json.loads((unfinished / layout.SUMMARY).read_text())
    summary.update(status="running", best_model=None, best_epoch=None)
    (unfinished / layout.SUMMARY).write_text(json.dumps(summary))

    with pytest.raises(JobError) as error:
        export(str(unfinished), fmt)
    message = str(error.value)
    assert "\n" not in message and layout.BEST_MODEL in message and str(unfinished) in message
    assert not (unfinished / "export").exists()

    with pytest.raises(JobError, match="no such run") as error:
        export("20000101-000000-none", fmt, root=str(tmp_path / "runs"))
    assert "\n" not in str(error.value)


def test_an_export_that_computes_something_else_is_refused_and_nothing_is_written(run_of, monkeypatch, tmp_path):
    # As an exporter fault would: the written model's probabilities are not the run's.
    monkeypatch.setattr(export_module, "class_scores", lambda logits: torch.softmax(2 * logits, dim=1))
    with pytest.raises(ExportMismatch, match=r"differs from the run's by .* \(tolerance 0.0001\) on \d+ test images"):
        export(run_of("digits"), "torchscript", out=str(tmp_path / "model.pt"))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("package", ["onnxruntime", "onnxscript"])
def test_missing_onnx_packages_say_what_to_install(run_of, monkeypatch, package):
    monkeypatch.setitem(sys.modules, package, None)  # makes `import package` fail
    with pytest.raises(JobError) as error:
        export(run_of("digits"), "onnx")
    assert str(error.value) == f"export --format onnx: {package} is not installed; pip install 'cnnjobs[export]'"


def _parser() -> Parser:
    parser = Parser(prog="cnnjobs")
    add_commands(parser.add_subparsers(dest="command", required=True, parser_class=Parser))
    return parser


def test_cli_exports_by_run_id_into_a_folder_and_prints_json(run_of, tmp_path, capsys):
    location = Path(run_of("digits"))
    out = tmp_path / "exports"
    args = _parser().parse_args(["export", location.name, "--dir", str(location.parents[1]), "--format",
                                 "torchscript", "--out", f"{out}/", "--json"])
    assert args.handler(args, Console(stderr=True)) == 0
    captured = capsys.readouterr()
    assert len(captured.out.strip().splitlines()) == 1  # with --json the human view is on stderr
    result = json.loads(captured.out)
    assert result["model"] == str(out / "model.pt") and result["format"] == "torchscript"
    assert result["preprocessing"] == str(out / "model.preprocessing.json")
    assert 0 <= result["max_difference"] <= result["tolerance"] == TOLERANCE
    assert sorted(p.name for p in out.iterdir()) == ["model.preprocessing.json", "model.pt"]
    assert "passed" in captured.err and str(out / "model.pt") in captured.err


def test_cli_rejects_an_unknown_format_in_one_line(capsys):
    with pytest.raises(SystemExit) as stop:
        _parser().parse_args(["export", "some-run", "--format", "savedmodel"])
    assert stop.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
