"""Training-time augmentation, built by one factory from `data.augment`, applied to whole batches at once.

Every geometric change (flips, rotation, shifts, shear, zoom, affine, random resized crop) is folded into one
affine matrix per image and applied in a single `grid_sample` over the batch; colour jitter and random erasing
are tensor arithmetic. Batches arrive and leave as uint8 (N, C, H, W).

It runs on the worker, on the batch's device (a GPU augments a batch in microseconds), just before the forward
pass, and never makes the host wait for the device. The draws that decide each image's change (angles, offsets,
flips, factors, boxes: a few numbers per image) come from a CPU generator seeded by the step's seed
(`train.seeds.augment`) and reach the device by a copy from pinned memory that does not wait: the same run draws
the same changes on every device, resumed or not, and different ones from epoch to epoch. The noise random erasing
paints (N x C x H x W values) is drawn on the device itself, from a generator of that device seeded the same way:
a GPU run paints other noise than a CPU run does.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from cnnjobs.spec import AugmentSpec, ColorJitterSpec


def make_augment(spec: AugmentSpec) -> Callable[[torch.Tensor, int], torch.Tensor]:
    """The augmentation `spec` describes, as a function of a uint8 (N, C, H, W) batch and the step's seed."""
    jitter = spec.color_jitter
    if isinstance(jitter, float):
        jitter = ColorJitterSpec(brightness=jitter, contrast=jitter, saturation=jitter)
    geometric = any([spec.rotation, spec.shift, spec.shear, spec.zoom, spec.affine, spec.random_resized_crop])

    def augment(images: torch.Tensor, seed: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        # torchvision's usual order (seed 002): colour first, so pixels moved in from outside keep the fill colour.
        # Flips are exact on uint8; only resampling and colour changes need floats (4x the bytes to move).
        x = _jitter(images.float(), jitter, gen) if jitter is not None else images
        fill = None if spec.fill_mode == "nearest" else spec.fill
        x = _warp(x.float(), to_device(_matrices(spec, images.shape, gen), images.device), fill) if geometric else \
            _flips(x, spec.hflip, spec.vflip, gen)
        if spec.random_erasing is not None:
            noise = torch.Generator(device=images.device).manual_seed(seed)
            x = _erase(x.float(), spec.random_erasing.p, spec.random_erasing.scale, gen, noise)
        return x if x.dtype == torch.uint8 else x.round_().clamp_(0, 255).to(torch.uint8)

    return augment


def to_device(values: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A few numbers drawn on the CPU, on `device` without making the host wait: a CUDA copy from pageable memory
    blocks until the device has done everything queued before it, one from pinned memory does not."""
    if device.type != "cuda":
        return values
    return values.pin_memory().to(device, non_blocking=True)


def _uniform(gen: torch.Generator, n: int, low: float, high: float) -> torch.Tensor:
    return torch.rand(n, generator=gen, dtype=torch.float64) * (high - low) + low


def _matrices(spec: AugmentSpec, shape: torch.Size, gen: torch.Generator) -> torch.Tensor:
    """Per image, the (N, 2, 3) matrix that maps output pixel coordinates (normalized to [-1, 1]) to input ones."""
    n, _, h, w = shape
    affine = spec.affine
    degrees = max(spec.rotation, affine.degrees if affine else 0.0)
    shift = max(spec.shift, affine.translate if affine else 0.0)
    shear = math.radians(max(spec.shear, affine.shear if affine else 0.0))
    low, high = affine.scale if affine else (1.0, 1.0)
    low, high = low * (1 - spec.zoom), high * (1 + spec.zoom)

    # Forward transform in pixel units, centre at the origin: p_out = R @ Sh @ S @ p_in + t.
    angle = torch.deg2rad(_uniform(gen, n, -degrees, degrees))
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotate = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    shear_x = torch.tan(_uniform(gen, n, -shear, shear))
    shearing = torch.eye(2, dtype=torch.float64).repeat(n, 1, 1)
    shearing[:, 0, 1] = shear_x
    scale = _uniform(gen, n, low, high)
    forward = rotate @ shearing @ (scale.view(n, 1, 1) * torch.eye(2, dtype=torch.float64))
    move = torch.stack([_uniform(gen, n, -shift, shift) * w, _uniform(gen, n, -shift, shift) * h], -1)
    inverse = torch.linalg.inv(forward)
    offset = -(inverse @ move.unsqueeze(-1)).squeeze(-1)

    flip = torch.ones(n, 2, dtype=torch.float64)
    flip[:, 0] = torch.where(torch.rand(n, generator=gen) < spec.hflip, -1.0, 1.0)
    flip[:, 1] = torch.where(torch.rand(n, generator=gen) < spec.vflip, -1.0, 1.0)
    inverse = inverse * flip.unsqueeze(1)  # flip the output coordinates before mapping them back

    if spec.random_resized_crop is not None:  # sample from a random window of the (transformed) input
        crop = spec.random_resized_crop
        area = _uniform(gen, n, *crop.scale)
        ratio = torch.exp(_uniform(gen, n, math.log(crop.ratio[0]), math.log(crop.ratio[1])))
        fw, fh = (area * ratio).sqrt().clamp(max=1), (area / ratio).sqrt().clamp(max=1)
        cx, cy = _uniform(gen, n, -1, 1) * (1 - fw) * w / 2, _uniform(gen, n, -1, 1) * (1 - fh) * h / 2
        window = torch.diag_embed(torch.stack([fw, fh], -1))  # the crop comes first: p_src = W p + c
        inverse = window @ inverse
        offset = (window @ offset.unsqueeze(-1)).squeeze(-1) + torch.stack([cx, cy], -1)

    # Pixel units -> the [-1, 1] units of affine_grid: theta = D^-1 [A | b] diag(D, 1), D = diag(w/2, h/2).
    half = torch.tensor([w / 2, h / 2], dtype=torch.float64)
    linear = inverse * half.view(1, 1, 2) / half.view(1, 2, 1)
    return torch.cat([linear, (offset / half).unsqueeze(-1)], -1).float()


def _warp(x: torch.Tensor, theta: torch.Tensor, fill: int | None) -> torch.Tensor:
    """Resample every image through its matrix; pixels from outside the image get `fill`, or with `fill=None`
    the nearest edge pixel (Keras' `fill_mode='nearest'`)."""
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    padding = "border" if fill is None else "zeros"
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode=padding, align_corners=False)
    if fill:  # where the sampling point fell outside the image (cheaper than resampling a mask channel)
        outside = (grid.abs() > 1).any(-1).unsqueeze(1)
        out = out.masked_fill_(outside, float(fill))
    return out


def _flips(x: torch.Tensor, hflip: float, vflip: float, gen: torch.Generator) -> torch.Tensor:
    """Flip the images the draws choose, and only those (the choice is made on the CPU, so which images to touch is
    known without asking the device): a copy of the batch plus the chosen images' flip, instead of a flip and a
    select over the whole batch."""
    n = len(x)
    for p, dim in ((hflip, 3), (vflip, 2)):
        if p:
            rows = np.flatnonzero((torch.rand(n, generator=gen) < p).numpy())  # host-side draws, read on the host
            if len(rows):
                index = to_device(torch.from_numpy(rows), x.device)
                x = x.index_copy(0, index, x.index_select(0, index).flip(dim))
    return x


def _jitter(x: torch.Tensor, spec: ColorJitterSpec, gen: torch.Generator) -> torch.Tensor:
    """Brightness, contrast, saturation (factors in [1-v, 1+v]) and hue rotation, each per image."""
    n, device = len(x), x.device

    def factor(v: float) -> torch.Tensor:
        return to_device(_uniform(gen, n, max(0.0, 1 - v), 1 + v).float().view(n, 1, 1, 1), device)

    gray_weights = to_device(torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1), device)  # without a wait
    if spec.brightness:
        x = (x * factor(spec.brightness)).clamp(0, 255)
    if spec.contrast:
        gray = (x * gray_weights).sum(1, keepdim=True) if x.shape[1] == 3 else x
        x = ((x - gray.mean((1, 2, 3), keepdim=True)) * factor(spec.contrast)
             + gray.mean((1, 2, 3), keepdim=True)).clamp(0, 255)
    if x.shape[1] == 3 and spec.saturation:
        gray = (x * gray_weights).sum(1, keepdim=True)
        x = ((x - gray) * factor(spec.saturation) + gray).clamp(0, 255)
    if x.shape[1] == 3 and spec.hue:  # rotate the chroma plane of YIQ
        to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
        angle = (_uniform(gen, n, -spec.hue, spec.hue) * 2 * math.pi).float()
        rot = torch.zeros(n, 3, 3)
        rot[:, 0, 0] = 1
        rot[:, 1, 1], rot[:, 1, 2] = torch.cos(angle), -torch.sin(angle)
        rot[:, 2, 1], rot[:, 2, 2] = torch.sin(angle), torch.cos(angle)
        mix = torch.linalg.inv(to_yiq) @ rot @ to_yiq
        x = torch.einsum("nij,njhw->nihw", to_device(mix, device), x).clamp(0, 255)
    return x


def _erase(x: torch.Tensor, p: float, scale: tuple[float, float], gen: torch.Generator,
           noise: torch.Generator) -> torch.Tensor:
    """With probability `p` per image, replace a random rectangle (area fraction in `scale`) with noise drawn on
    the batch's device from `noise`."""
    n, c, h, w = x.shape
    area = _uniform(gen, n, *scale)
    ratio = torch.exp(_uniform(gen, n, math.log(0.3), math.log(3.3)))
    eh, ew = (area / ratio).sqrt().clamp(max=1) * h, (area * ratio).sqrt().clamp(max=1) * w
    top, left = _uniform(gen, n, 0, 1) * (h - eh), _uniform(gen, n, 0, 1) * (w - ew)
    chosen = torch.rand(n, generator=gen) < p
    edges = to_device(torch.stack([top, top + eh, left, left + ew, chosen.double()], 1), x.device)  # (n, 5)
    ys = torch.arange(h, dtype=torch.float64, device=x.device).view(1, h, 1)
    xs = torch.arange(w, dtype=torch.float64, device=x.device).view(1, 1, w)
    box = ((ys >= edges[:, 0, None, None]) & (ys < edges[:, 1, None, None])
           & (xs >= edges[:, 2, None, None]) & (xs < edges[:, 3, None, None]) & (edges[:, 4, None, None] > 0))
    painted = torch.randint(0, 256, x.shape, generator=noise, device=x.device).float()
    return torch.where(box.unsqueeze(1), painted, x)
