"""`cnnjobs visualize`: a grid per conv/pool layer in execution order, the model's own prediction, captum's Grad-CAM
per task, and a one-line error for an image that cannot be read. Tiny runs made without Ray."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.nn.modules import pooling

from cnnjobs import cli
from cnnjobs.cli.common import Parser
from cnnjobs.cli.visualize import add_commands
from cnnjobs.errors import JobError
from cnnjobs.models.heads import MultiHead
from cnnjobs.results.trained import load_trained
from cnnjobs.results.visualize import cam_figure, grad_cam, visualize
from cnnjobs.run import layout
from tests.conftest import stand_in
from tests.results.trained_run import make_trained_run

# Every 2-D pooling there is, through torch's own base classes: a pool type the module forgets still counts here.
POOLS = (pooling._MaxPoolNd, pooling._AvgPoolNd, pooling._AdaptiveMaxPoolNd, pooling._AdaptiveAvgPoolNd,
         pooling._LPPoolNd)


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """A lenet5 run on the digits, and one digit scan as a PNG."""
    from sklearn.datasets import load_digits

    out = tmp_path_factory.mktemp("digits")
    run, _ = make_trained_run(out)
    image = out / "three.png"
    Image.fromarray((load_digits().images[3] * 255 / 16).astype(np.uint8)).resize((32, 32)).save(image)
    return run, image


@pytest.fixture(scope="module")
def fashion(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """A three-task cfl_cnn run on the fashion stand-in, and one of its images."""
    out = tmp_path_factory.mktemp("fashion")
    csv = stand_in("fashion", out / "data", n=120)
    run, _ = make_trained_run(out, "jobs/fashion_multi.yaml", f"data.source.path={csv}", "model.arch=cfl_cnn",
                              "data.image_size=[40, 30]", "data.source.min_count=1")
    return run, sorted((csv.parent / "images").glob("*.jpg"))[0]


def conv_and_pool_layers(run: str) -> list[tuple[str, tuple[int, ...]]]:
    """(name, output shape) of the model's Conv2d and pooling modules in the order a forward pass calls them."""
    trained = load_trained(run)
    order: dict[str, tuple[int, ...]] = {}

    def record(name: str):
        def hook(module: nn.Module, inputs, output) -> None:  # returning anything would replace the output
            order.setdefault(name, tuple(output.shape[1:]))
        return hook

    handles = [module.register_forward_hook(record(name)) for name, module in trained.model.named_modules()
               if isinstance(module, (nn.Conv2d, *POOLS))]
    trained.model(torch.zeros(1, trained.preprocessing.channels, *trained.preprocessing.image_size))
    for handle in handles:
        handle.remove()
    return list(order.items())


def assert_drawn(path: str, panels: bool = True) -> None:
    """A valid PNG whose pixels vary; with `panels` (maps, heat maps) no single colour fills the coloured part, as
    a grid of constant panels or an all-zero heat map would."""
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.verify()
    pixels = np.asarray(Image.open(path).convert("RGB")).reshape(-1, 3)
    assert pixels.std() > 20, f"{path}: blank"
    if panels:
        colored = pixels[pixels.max(1).astype(int) - pixels.min(1) > 30]  # white background, black text left out
        _, counts = np.unique(colored.astype(np.int32) @ [65536, 256, 1], return_counts=True)  # one int per colour
        assert len(colored) > 0.1 * len(pixels) and counts.max() < 0.8 * len(colored), f"{path}: panels all alike"


@pytest.mark.parametrize("which, expected", [("digits", 4), ("fashion", 7)])
def test_one_grid_per_conv_and_pool_layer_in_execution_order(request, which, expected):
    run, image = request.getfixturevalue(which)
    layers = conv_and_pool_layers(run)
    assert len(layers) == expected  # lenet5: 2 conv + 2 pool; cfl_cnn: 4 conv + 3 pool

    result = visualize(run, str(image))

    out = Path(run) / "visualize" / image.stem  # the default folder
    assert result.out == str(out)
    assert [(layer.name, layer.output_shape) for layer in result.layers] == layers
    assert [layer.kind for layer in result.layers] == [type(load_trained(run).model.get_submodule(name)).__name__
                                                       for name, _ in layers]
    names = [layout.feature_maps_png(index, name) for index, (name, _) in enumerate(layers, 1)]
    assert [Path(layer.file).name for layer in result.layers] == names
    assert sorted(path.name for path in out.glob("features_*.png")) == names
    assert result.files == [str(out / name) for name in names] + [str(out / "prediction.png")]
    assert result.cams == []


@pytest.mark.parametrize("which", ["digits", "fashion"])
def test_every_png_is_an_image_with_something_drawn(request, which, tmp_path):
    run, image = request.getfixturevalue(which)
    result = visualize(run, str(image), out=str(tmp_path), cam=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(Path(f).name for f in result.files)
    for layer in result.layers:
        assert_drawn(layer.file)
        assert Image.open(layer.file).size[0] >= 600  # a readable width, whatever the channel count
    assert_drawn(result.prediction_png, panels=False)
    for cam in result.cams:
        assert_drawn(cam.file)


@pytest.mark.parametrize("which", ["digits", "fashion"])
def test_the_prediction_is_the_models_probabilities(request, which, tmp_path):
    run, image = request.getfixturevalue(which)
    trained = load_trained(run)
    probabilities = trained.probabilities(torch.tensor(trained.pixels(image)).unsqueeze(0))

    result = visualize(run, str(image), out=str(tmp_path))

    assert [guess.task for guess in result.prediction] == list(trained.preprocessing.classes)
    for guess in result.prediction:
        values, indices = probabilities[guess.task][0].sort(descending=True)
        classes = trained.preprocessing.classes[guess.task]
        assert [name for name, _ in guess.top] == [classes[i] for i in indices[:3]]
        assert [p for _, p in guess.top] == pytest.approx(values[:3].tolist(), abs=1e-6)
        assert (guess.index, guess.predicted) == (int(indices[0]), classes[indices[0]])


def test_cam_draws_captums_grad_cam_for_the_predicted_class_of_each_task(fashion, tmp_path, monkeypatch):
    from captum.attr import LayerAttribution, LayerGradCam

    calls = []
    attribute = LayerGradCam.attribute

    def spy(self, inputs, target=None, **kwargs):
        calls.append((self.layer, target, attribute(self, inputs, target=target, **kwargs)))
        return calls[-1][2]

    monkeypatch.setattr(LayerGradCam, "attribute", spy)
    run, image = fashion
    trained = load_trained(run)
    probabilities = trained.probabilities(torch.tensor(trained.pixels(image)).unsqueeze(0))
    last_conv = [name for name, module in trained.model.backbone.named_modules() if isinstance(module, nn.Conv2d)][-1]

    result = visualize(run, str(image), out=str(tmp_path), cam=True)

    assert [cam.task for cam in result.cams] == ["gender", "articleType", "baseColour"]
    assert [Path(cam.file).name for cam in result.cams] == [f"gradcam_{t}.png" for t in probabilities]
    assert len(calls) == 3
    for cam, (layer, target, attribution) in zip(result.cams, calls):
        predicted = int(probabilities[cam.task][0].argmax())
        assert cam.index == target == predicted
        assert cam.probability == pytest.approx(float(probabilities[cam.task][0, predicted]), abs=1e-6)
        assert cam.layer == f"backbone.{last_conv}"
        assert torch.equal(layer.weight, trained.model.get_submodule(cam.layer).weight)
        expected = LayerAttribution.interpolate(attribution, (40, 30), "bilinear")[0, 0].detach().numpy()
        np.testing.assert_allclose(cam.heat, expected, rtol=1e-6)
        assert cam.heat.shape == (40, 30) and cam.heat.min() >= 0 and cam.heat.max() > 0
        assert_drawn(cam.file)
    # What the PNG draws over the image is that heat map, scaled to its peak.
    figure = cam_figure(trained.pixels(image), result.cams[0].heat, "title")
    np.testing.assert_allclose(figure.axes[1].images[-1].get_array(), result.cams[0].heat / result.cams[0].heat.max())


def test_grad_cam_of_a_one_logit_sigmoid_head_takes_class_indices():
    from captum.attr import LayerGradCam

    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 8))
    model = MultiHead(backbone, 8, {"cat": 2}, {"cat": "sigmoid"}).eval()
    inputs = torch.randn(1, 1, 8, 8)
    trained = SimpleNamespace(model=model, inputs=lambda batch: batch, preprocessing=SimpleNamespace(image_size=(8, 8)))

    heats = [grad_cam(trained, inputs, "backbone.0", "cat", target) for target in (0, 1)]

    # Class 1 is the logit itself, class 0 its negation: evidence for one is evidence against the other.
    for target, sign in ((1, 1), (0, -1)):
        direct = LayerGradCam(lambda x, s=sign: s * model(x)["cat"], backbone[0]).attribute(
            inputs, target=0, relu_attributions=True)
        np.testing.assert_allclose(heats[target], nn.functional.interpolate(direct, (8, 8), mode="bilinear")[0, 0]
                                   .detach().numpy(), rtol=1e-5, atol=1e-8)
    assert heats[0].shape == (8, 8) and not np.allclose(heats[0], heats[1])


@pytest.mark.parametrize("content", [b"not an image, just text\n", None], ids=["text", "missing"])
def test_an_unreadable_image_is_a_one_line_job_error_naming_the_file(digits, tmp_path, content):
    run, _ = digits
    image = tmp_path / "photo.png"
    if content is not None:
        image.write_bytes(content)
    with pytest.raises(JobError) as error:
        visualize(run, str(image), out=str(tmp_path / "out"))
    message = str(error.value)
    assert message.startswith(f"{image}: cannot read the image (") and "\n" not in message
    assert not (tmp_path / "out").exists()


def small_parser() -> Parser:
    """The `cnnjobs` parser with only `visualize` (not yet registered in cnnjobs/cli/__init__.py)."""
    parser = Parser(prog="cnnjobs")
    parser.add_argument("--debug", action="store_true")
    add_commands(parser.add_subparsers(dest="command", required=True, parser_class=Parser))
    return parser


def test_the_command_prints_tables_json_and_exits_2_on_a_bad_image(fashion, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "build_parser", small_parser)  # main() itself: its exit codes and --json handling
    run, image = fashion
    runs_dir, run_id = str(Path(run).parent.parent), Path(run).name

    assert cli.main(["visualize", run_id, str(image), "--dir", runs_dir, "--cam", "--json"]) == 0
    captured = capsys.readouterr()
    payload = json.loads(captured.out.strip().splitlines()[-1])
    assert captured.out.count("\n") == 1  # the tables went to stderr
    assert payload["out"] == str(Path(run) / "visualize" / image.stem)
    assert [cam["task"] for cam in payload["cams"]] == ["gender", "articleType", "baseColour"]
    assert all(Path(layer["file"]).is_file() for layer in payload["layers"]) and len(payload["layers"]) == 7
    assert "heat" not in payload["cams"][0]
    assert payload["prediction"][0]["predicted"] in captured.err and "backbone.0.14" in captured.err

    assert cli.main(["visualize", run, str(image), "--out", str(tmp_path / "plain")]) == 0
    assert "articleType" in capsys.readouterr().out
    assert len(list((tmp_path / "plain").glob("*.png"))) == 8

    bad = tmp_path / "notes.png"
    bad.write_text("hello")
    assert cli.main(["visualize", run, str(bad)]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(f"cnnjobs: error: {bad}: cannot read the image") and captured.err.count("\n") == 1
