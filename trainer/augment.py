"""Batch augmentations on the device, in [0, 1] image space, with their (soft) targets.

Every method is `f(images, targets, generator, params, model) -> Augmented`: `images` (B, C, H, W) in [0, 1],
`targets` one-hot (B, K); the result carries the new images, the new targets (mixing methods give soft labels; SnapMix's
need not sum to one), and `same_on_maps`, which applies the very same spatial transform to (B, 1, H, W) maps (what the
saliency-consistency loss compares against). The caller's tensors are never modified. Random numbers come from
`generator` (a CPU generator), so a method is reproducible under a seed. This module holds the single-image methods
and the helpers the mixing ones (`trainer.mixing`) share; `trainer.augmentations` is the registry.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

FILL = (0.485, 0.456, 0.406)  # erased pixels take the ImageNet mean: zero after normalisation


@dataclass
class Augmented:
    """An augmented batch: images, targets, and the same spatial transform for saliency maps."""

    images: torch.Tensor
    targets: torch.Tensor
    same_on_maps: Callable[[torch.Tensor], torch.Tensor]


def identity(maps: torch.Tensor) -> torch.Tensor:
    return maps


def uniform(generator: torch.Generator, n: int, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    """`n` uniform numbers in [low, high) from `generator` (CPU)."""
    return low + (high - low) * torch.rand(n, generator=generator)


def box_masks(
    n: int,
    size: tuple[int, int],
    areas: torch.Tensor,
    generator: torch.Generator,
    centres: torch.Tensor | None = None,
    aspect: torch.Tensor | None = None,
) -> torch.Tensor:
    """(n, 1, H, W) float masks, 1 inside one axis-aligned box per image of about `areas` × H × W pixels, centred
    at `centres` ((n, 2) rows, cols) or at random; clipped to the image."""
    h, w = size
    aspect = torch.ones(n) if aspect is None else aspect
    bh = (areas.clamp(0, 1) * h * w * aspect).sqrt().clamp(max=h)
    bw = (areas.clamp(0, 1) * h * w / aspect).sqrt().clamp(max=w)
    if centres is None:
        centres = torch.stack([uniform(generator, n, 0, h), uniform(generator, n, 0, w)], dim=1)
    top = (centres[:, 0] - bh / 2).round().clamp(0, h).long()
    left = (centres[:, 1] - bw / 2).round().clamp(0, w).long()
    bottom = (centres[:, 0] + bh / 2).round().clamp(0, h).long()
    right = (centres[:, 1] + bw / 2).round().clamp(0, w).long()
    rows, cols = torch.arange(h).view(1, h, 1), torch.arange(w).view(1, 1, w)
    inside = (
        (rows >= top.view(n, 1, 1))
        & (rows < bottom.view(n, 1, 1))
        & (cols >= left.view(n, 1, 1))
        & (cols < right.view(n, 1, 1))
    )
    return inside.float().unsqueeze(1)


def erase(
    images: torch.Tensor, targets: torch.Tensor, masks: torch.Tensor, fill: torch.Tensor | None = None
) -> Augmented:
    """Replace the masked pixels (mask 1) by `fill` (the ImageNet mean by default); labels unchanged; saliency maps
    are zero where the image was erased."""
    masks = masks.to(images.device, images.dtype)
    if fill is None:
        fill = torch.tensor(FILL, device=images.device, dtype=images.dtype).view(1, 3, 1, 1).expand_as(images)
    out = images * (1 - masks) + fill * masks
    return Augmented(out, targets.clone(), lambda maps: maps * (1 - masks))


def no_augmentation(images, targets, generator, params, model) -> Augmented:
    return Augmented(images.clone(), targets.clone(), identity)


def flip(images, targets, generator, params, model) -> Augmented:
    """The light default: horizontal flip with probability 1/2 and a rotation in ±`params.max_degrees`."""
    n = images.shape[0]
    flipped = torch.rand(n, generator=generator) < 0.5
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(params.max_degrees)
    cos, sin = torch.cos(angle), torch.sin(angle)
    sign = torch.where(flipped, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = cos * sign, -sin
    theta[:, 1, 0], theta[:, 1, 1] = sin * sign, cos
    theta = theta.to(images.device, images.dtype)

    def warp(x: torch.Tensor) -> torch.Tensor:
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

    return Augmented(warp(images), targets.clone(), warp)


def cutout(images, targets, generator, params, model) -> Augmented:
    """Cutout (DeVries & Taylor): one square of side `cutout_size` × the image side, anywhere (clipped)."""
    n, _, h, w = images.shape
    return erase(images, targets, box_masks(n, (h, w), torch.full((n,), params.cutout_size**2), generator))


def random_erasing(images, targets, generator, params, model) -> Augmented:
    """Random Erasing (Zhong et al.): with probability `erasing_probability`, a rectangle of 2–40% of the area and
    aspect ratio in [0.3, 3.3] filled with random values."""
    n, c, h, w = images.shape
    areas = uniform(generator, n, 0.02, 0.4) * (torch.rand(n, generator=generator) < params.erasing_probability)
    aspect = torch.exp(uniform(generator, n, math.log(0.3), math.log(1 / 0.3)))
    noise = torch.rand(n, c, h, w, generator=generator).to(images.device, images.dtype)
    return erase(images, targets, box_masks(n, (h, w), areas, generator, aspect=aspect), fill=noise)


def hide_and_seek(images, targets, generator, params, model) -> Augmented:
    """Hide-and-Seek (Singh & Lee): the image cut into `hide_grid`² patches, each hidden with probability
    `hide_probability`."""
    n, _, h, w = images.shape
    g = params.hide_grid
    hidden = (torch.rand(n, 1, g, g, generator=generator) < params.hide_probability).float()
    return erase(images, targets, F.interpolate(hidden, size=(h, w), mode="nearest"))


def gridmask(images, targets, generator, params, model) -> Augmented:
    """GridMask (Chen et al.): squares of side (1 - `gridmask_ratio`) × d removed on a grid of period d (random in
    [H/8, H/3]) with a random offset, per image."""
    n, _, h, w = images.shape
    masks = torch.zeros(n, 1, h, w)
    rows, cols = torch.arange(h).view(h, 1), torch.arange(w).view(1, w)
    for i in range(n):
        d = int(uniform(generator, 1, max(h // 8, 2), max(h // 3, 3)).item())
        side = max(1, int(d * (1 - params.gridmask_ratio)))
        dy, dx = (int(v) for v in torch.randint(0, d, (2,), generator=generator))
        masks[i, 0] = (((rows + dy) % d) < side) & (((cols + dx) % d) < side)
    return erase(images, targets, masks)


def augmix(images, targets, generator, params, model) -> Augmented:
    """AugMix (Hendrycks et al.) per image, torchvision's implementation. Its shears and translations are not
    tracked: saliency maps are compared as they are."""
    from torchvision.transforms import AugMix

    op = AugMix(severity=params.augmix_severity)
    as_bytes = (images * 255).round().clamp(0, 255).to(torch.uint8).cpu()
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):  # torchvision draws from the global generator
        torch.manual_seed(seed)
        out = torch.stack([op(img) for img in as_bytes])
    return Augmented(out.to(images.device, images.dtype) / 255, targets.clone(), identity)
