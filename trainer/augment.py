"""Batch-level augmentations, applied on the device to normalised images. Labels stay hard here."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def augment_batch(images: torch.Tensor, name: str, generator: torch.Generator) -> torch.Tensor:
    """Return an augmented copy of `images` (B, C, H, W); `generator` (a CPU generator) makes it reproducible."""
    if name == "none":
        return images
    if name == "flip":
        return flip_and_rotate(images, generator)
    raise ValueError(f"unknown augmentation {name!r}")


def flip_and_rotate(images: torch.Tensor, generator: torch.Generator, max_degrees: float = 10.0) -> torch.Tensor:
    """The light default: a horizontal flip with probability 1/2 and a rotation in ±`max_degrees`, per image."""
    n = images.shape[0]
    flip = torch.rand(n, generator=generator) < 0.5
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(max_degrees)
    cos, sin = torch.cos(angle), torch.sin(angle)
    sign = torch.where(flip, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = cos * sign, -sin
    theta[:, 1, 0], theta[:, 1, 1] = sin * sign, cos
    grid = F.affine_grid(theta.to(images.device, images.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
