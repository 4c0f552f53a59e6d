"""Every registered architecture builds, runs forward and backward, and keeps the seeds' shapes and sizes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnjobs.errors import JobError
from cnnjobs.models import build_model, catalog, list_models
from cnnjobs.models.summary import count_params, layer_table
from cnnjobs.spec import ModelSpec

SEED_ARCHS = ["bn_cnn", "catsdogs_cnn", "cfl_cnn", "lenet5"]
TORCHVISION = ["convnext_tiny", "efficientnet_b0", "mobilenet_v2", "resnet18", "resnet50", "resnext50_32x4d"]


def test_registry_holds_the_seed_and_torchvision_architectures():
    assert set(SEED_ARCHS + TORCHVISION) <= set(list_models())
    assert list_models("res*") == ["resnet18", "resnet50", "resnext50_32x4d"]
    assert set(list_models()) == set(catalog.names()), "every catalogued architecture has a constructor"
    resnext = catalog.architecture("resnext50_32x4d")
    assert "seed 003" in resnext.source and resnext.pretrained
    assert not catalog.architecture("lenet5").pretrained


@pytest.mark.parametrize("arch", SEED_ARCHS + TORCHVISION)
def test_forward_and_backward_small_then_forward_at_default_size(arch):
    info = catalog.architecture(arch)
    small = (max(info.min_size, 32),) * 2
    model = build_model(ModelSpec(arch=arch), {"a": 7, "b": 2}, small, 1)
    out = model(torch.randn(2, 1, *small))
    assert {k: tuple(v.shape) for k, v in out.items()} == {"a": (2, 7), "b": (2, 2)}
    (out["a"].logsumexp(1) + out["b"][:, 0]).sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads), "every parameter gets a gradient"

    # Seed CNNs size their dense layers from the input; torchvision networks pool to 1x1 whatever the size, so
    # the same (slow to build) model runs at the default size too.
    if arch in SEED_ARCHS:
        model = build_model(ModelSpec(arch=arch), {"a": 7, "b": 2}, info.default_size, 1)
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 1, *info.default_size))["a"].shape == (1, 7)


def test_seed_cnns_have_the_seeds_parameter_counts():
    # Keras' model.summary() totals: seed 000 (Dense(1, sigmoid) head) and LeNet-5 without padding (seed 001).
    catsdogs = ModelSpec(arch="catsdogs_cnn", heads={"label": {"output": "sigmoid"}})
    assert count_params(build_model(catsdogs, {"label": 2}, (150, 150), 3)) == 9_494_561
    assert count_params(build_model(ModelSpec(arch="lenet5"), {"digit": 10}, (28, 28), 1)) == 44_426
    # Seed 003 hard-codes Linear(9216, 1000) for 100x100 inputs; here it follows from the input size.
    cfl = build_model(ModelSpec(arch="cfl_cnn"), {"label": 3}, (100, 100), 3)
    assert [m.in_features for m in cfl.modules() if isinstance(m, nn.Linear)][:1] == [9216]


def test_layer_table_shows_keras_like_output_shapes():
    rows, params = layer_table(ModelSpec(arch="catsdogs_cnn"), (150, 150), 3, {"label": 2})
    shapes = [row.output_shape for row in rows if row.kind in ("Conv2d", "MaxPool2d", "Linear")]
    assert shapes == [(16, 148, 148), (16, 74, 74), (32, 72, 72), (32, 36, 36), (64, 34, 34), (64, 17, 17),
                      (512,), (2,)]
    assert params == sum(row.params for row in rows)
    folded, _ = layer_table(ModelSpec(arch="resnet18"), (64, 64), 3, depth=2)
    assert [row.name for row in folded][:3] == ["backbone.conv1", "backbone.bn1", "backbone.relu"]
    assert "backbone.layer1" in [row.name for row in folded] and len(folded) < 15


def test_width_and_dropout_options_change_the_network():
    base = build_model(ModelSpec(arch="bn_cnn"), {"label": 2}, (64, 64), 3)
    narrow = build_model(ModelSpec(arch="bn_cnn", width=0.5), {"label": 2}, (64, 64), 3)
    assert count_params(narrow) < count_params(base) / 3
    dropouts = [m.p for m in base.modules() if isinstance(m, nn.Dropout)]
    assert dropouts == [0.25, 0.25, 0.25, 0.5], "seed 004's dropouts by default"
    changed = build_model(ModelSpec(arch="bn_cnn", conv_dropout=0, dropout=0.3, head_dropout=0.2), {"label": 2},
                          (64, 64), 3)
    assert [m.p for m in changed.modules() if isinstance(m, nn.Dropout)] == [0.3, 0.2]
    mobile = build_model(ModelSpec(arch="mobilenet_v2", width=0.5), {"label": 2}, (32, 32), 3)
    assert count_params(mobile) < count_params(build_model(ModelSpec(arch="mobilenet_v2"), {"label": 2},
                                                           (32, 32), 3)) / 2
    with pytest.raises(JobError, match="model.width: resnet18"):
        build_model(ModelSpec(arch="resnet18", width=2), {"label": 2}, (32, 32), 3)


def test_sizes_below_an_architectures_minimum_name_the_image_size():
    with pytest.raises(JobError, match=r"data.image_size: convnext_tiny needs images of at least 32 px"):
        build_model(ModelSpec(arch="convnext_tiny"), {"label": 2}, (16, 16), 3)
    with pytest.raises(JobError, match="data.image_size: catsdogs_cnn"):
        build_model(ModelSpec(arch="catsdogs_cnn"), {"label": 2}, (20, 20), 3)


@pytest.mark.parametrize("arch", SEED_ARCHS + ["convnext_tiny"])
def test_the_catalogs_minimum_size_is_the_networks_own(arch):
    """The schema refuses small images from the torch-free catalog; the network itself must agree exactly."""
    info = catalog.architecture(arch)
    backbone = build_model(ModelSpec(arch=arch), {"a": 2}, (info.min_size, info.min_size), 3).backbone.eval()
    with torch.no_grad():
        backbone(torch.zeros(1, 3, info.min_size, info.min_size))
    spec = ModelSpec(arch=arch)
    with pytest.raises((RuntimeError, ValueError)):  # one pixel less: a convolution or pooling finds no room
        from cnnjobs.models.registry import BUILDERS

        BUILDERS[arch](spec, 3, (info.min_size - 1, info.min_size - 1))[0].eval()(
            torch.zeros(1, 3, info.min_size - 1, info.min_size - 1))
