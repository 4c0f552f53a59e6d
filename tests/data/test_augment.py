"""Augmentation: does what each key says, keeps shapes and dtype, and is seeded per step of the run."""

from __future__ import annotations

import pytest
import torch

from cnnjobs.data.augment import make_augment
from cnnjobs.spec import AugmentSpec
from cnnjobs.train.seeds import augment as augment_seed


def batch(n=6, c=3, h=20, w=16) -> torch.Tensor:
    x = torch.zeros(n, c, h, w, dtype=torch.uint8)
    x[:, 0, 5:15, 2:6], x[:, 1, 5:15, 2:6] = 200, 60  # a reddish bar left of centre (hue has a colour to turn)
    return x


def run(gen_seed=0, **spec) -> torch.Tensor:
    return make_augment(AugmentSpec(**spec))(batch(), gen_seed)


def test_nothing_asked_nothing_changed_and_flips_are_exact():
    assert torch.equal(run(), batch())
    assert torch.equal(run(hflip=1.0), batch().flip(3))
    assert torch.equal(run(vflip=1.0), batch().flip(2))
    assert torch.equal(run(hflip=1.0, zoom=1e-9), batch().flip(3))  # the same flip through the affine path


@pytest.mark.parametrize("spec", [
    {"rotation": 30}, {"shift": 0.2}, {"shear": 15}, {"zoom": 0.3}, {"random_resized_crop": {}},
    {"affine": {"degrees": 20, "translate": 0.1, "scale": [0.8, 1.2]}, "fill": 255},
    {"color_jitter": 0.3}, {"color_jitter": {"hue": 0.2}}, {"random_erasing": {"p": 1.0}},
])
def test_each_augmentation_changes_images_keeps_shape_and_is_seeded(spec):
    out = run(**spec)
    assert out.dtype == torch.uint8 and out.shape == batch().shape
    assert not torch.equal(out, batch())
    assert torch.equal(out, run(**spec)) and not torch.equal(out, run(gen_seed=1, **spec))


def test_fill_is_used_for_pixels_from_outside_or_the_nearest_edge_pixel():
    out = run(shift=0.4, fill=255)
    assert (out == 255).any() and not (batch() == 255).any()
    # Keras' default fill_mode='nearest' (seed 004): the edge pixels are repeated, nothing new appears
    base = torch.arange(20, dtype=torch.uint8).view(1, 1, 1, 20).expand(2, 3, 16, 20).contiguous() * 10
    nearest = make_augment(AugmentSpec(shift=0.4, fill=255, fill_mode="nearest"))(
        base, 0)
    assert nearest.max() <= base.max() and nearest.min() >= base.min() and not torch.equal(nearest, base)


def test_grayscale_batches_work():
    x = torch.full((4, 1, 12, 12), 100, dtype=torch.uint8)
    out = make_augment(AugmentSpec(color_jitter=0.5, rotation=10))(x, 0)
    assert out.shape == x.shape


def test_each_step_of_a_run_draws_its_own_changes():
    seeds = {augment_seed(0, 1, 0, 1), augment_seed(1, 1, 0, 1), augment_seed(0, 2, 0, 1),
             augment_seed(0, 1, 1, 1), augment_seed(0, 1, 0, 2)}
    assert len(seeds) == 5 and augment_seed(0, 1, 0, 1) == augment_seed(0, 1, 0, 1)
