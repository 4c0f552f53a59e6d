"""Heads (softmax, one sigmoid logit), frozen backbones, ImageNet weights through torchvision's API, local weights."""

from __future__ import annotations

import urllib.error

import pytest
import torch
import torch.nn.functional as F
import torchvision

from cnnjobs.errors import JobError
from cnnjobs.models import build_model
from cnnjobs.models.heads import class_scores, predicted_class, task_loss
from cnnjobs.spec import ModelSpec


def test_sigmoid_head_has_one_logit_and_binary_loss_scores_and_predictions():
    model = build_model(ModelSpec(arch="lenet5", heads={"pet": {"output": "sigmoid"}}), {"pet": 2, "size": 3},
                        (28, 28), 1)
    out = model(torch.randn(4, 1, 28, 28))
    assert out["pet"].shape == (4, 1) and out["size"].shape == (4, 3)
    logits, labels = torch.tensor([[2.0], [-1.0]]), torch.tensor([1, 1])
    assert task_loss(logits, labels) == pytest.approx(float(F.binary_cross_entropy_with_logits(
        torch.tensor([2.0, -1.0]), torch.tensor([1.0, 1.0]))))
    assert predicted_class(logits).tolist() == [1, 0]
    scores = class_scores(logits)
    assert scores.shape == (2, 2) and torch.allclose(scores.sum(1), torch.ones(2))
    assert scores[0, 1] == pytest.approx(float(torch.sigmoid(torch.tensor(2.0))))
    smoothed = task_loss(torch.tensor([[0.0, 5.0]]), torch.tensor([1]), label_smoothing=0.1)
    assert smoothed > task_loss(torch.tensor([[0.0, 5.0]]), torch.tensor([1]))


def test_frozen_backbone_trains_only_the_heads_and_keeps_batchnorm_statistics():
    model = build_model(ModelSpec(arch="bn_cnn", freeze="backbone"), {"label": 2}, (32, 32), 3)
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    model.train()
    assert not model.backbone.training and model.heads.training
    for _ in range(3):
        optimizer.zero_grad()
        F.cross_entropy(model(torch.randn(8, 3, 32, 32))["label"], torch.randint(0, 2, (8,))).backward()
        optimizer.step()
    after = model.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "weights and running stats unchanged"
    model.freeze_backbone(False)
    assert model.backbone.training and all(p.requires_grad for p in model.parameters())


def test_pretrained_offline_is_a_job_error_naming_the_key(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "urlopen", offline)  # what torch's download (under torchvision's API) calls
    with pytest.raises(JobError, match=r"model.pretrained: cannot download resnet18's ImageNet weights.*offline"):
        build_model(ModelSpec(arch="resnet18", pretrained=True), {"label": 3}, (32, 32), 3)
    with pytest.raises(JobError, match="model.pretrained: lenet5 has no pretrained weights"):
        build_model(ModelSpec(arch="lenet5", pretrained=True), {"label": 3}, (28, 28), 1)


def test_pretrained_loads_torchvisions_cached_imagenet_file(monkeypatch, tmp_path):
    """The real weights API: the DEFAULT weights' file in torch's hub cache is what `pretrained: true` loads."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    reference = torchvision.models.mobilenet_v2()
    url = torchvision.models.MobileNet_V2_Weights.DEFAULT.url
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(reference.state_dict(), tmp_path / "hub" / "checkpoints" / url.rsplit("/", 1)[1])

    model = build_model(ModelSpec(arch="mobilenet_v2", pretrained=True, freeze="backbone"), {"label": 3},
                        (32, 32), 3)
    assert torch.equal(model.backbone.features[0][0].weight, reference.features[0][0].weight)
    assert not any(p.requires_grad for p in model.backbone.parameters())
    grey = build_model(ModelSpec(arch="mobilenet_v2", pretrained=True), {"label": 3}, (32, 32), 1)
    stem = grey.backbone.features[0][0].weight
    assert stem.shape[1] == 1 and torch.allclose(stem, reference.features[0][0].weight.sum(1, keepdim=True))


def test_local_weights_torchvision_file_or_cnnjobs_model(tmp_path):
    reference = torchvision.models.resnet18()
    torch.save(reference.state_dict(), tmp_path / "resnet18.pth")
    model = build_model(ModelSpec(arch="resnet18", weights=str(tmp_path / "resnet18.pth")), {"label": 4},
                        (32, 32), 3)
    assert torch.equal(model.backbone.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)

    trained = build_model(ModelSpec(arch="lenet5"), {"digit": 10}, (28, 28), 1)
    torch.save(trained.state_dict(), tmp_path / "best_model.pt")
    again = build_model(ModelSpec(arch="lenet5", weights=str(tmp_path / "best_model.pt")), {"digit": 10, "odd": 2},
                        (28, 28), 1)
    assert torch.equal(again.heads["digit"].weight, trained.heads["digit"].weight)
    skipped = build_model(ModelSpec(arch="lenet5", weights=str(tmp_path / "best_model.pt")), {"digit": 10},
                          (28, 28), 1, init_weights=False)
    assert not torch.equal(skipped.heads["digit"].weight, trained.heads["digit"].weight)

    with pytest.raises(JobError, match="model.weights: no such file"):
        build_model(ModelSpec(arch="lenet5", weights=str(tmp_path / "missing.pt")), {"digit": 10}, (28, 28), 1)
    with pytest.raises(JobError, match=r"model.weights: .*resnet18.pth does not fit lenet5"):
        build_model(ModelSpec(arch="lenet5", weights=str(tmp_path / "resnet18.pth")), {"digit": 10}, (28, 28), 1)
    (tmp_path / "junk.pt").write_text("not a tensor file")
    with pytest.raises(JobError, match="model.weights: .* is not a PyTorch state dict"):
        build_model(ModelSpec(arch="lenet5", weights=str(tmp_path / "junk.pt")), {"digit": 10}, (28, 28), 1)
