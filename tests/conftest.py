"""Shared fixtures: small real data (scikit-learn's digits, written as PNG folders when a folder is needed)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def tiny_config(**overrides) -> dict:
    """A digits trial that trains in about a second per epoch on the CPU."""
    config = {"dataset": {"kind": "digits", "limit_per_class": 30}, "image_size": 64, "batch_size": 32,
              "architecture": "test_resnet", "cam_method": "gradcam", "threshold": 0.5, "multiply_weight": 0.5,
              "proxy_steps": "1,p,1", "wrong_subset": 1.0, "optimizer": {"name": "adamw", "lr": 0.003},
              "seed": 0}
    config.update(overrides)
    return config


def write_digit_folder(root: Path, classes: int = 3, per_class: int = 12, size: int = 32) -> Path:
    """An image folder `root/<digit>/<i>.png` of real digit images."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    for c in range(classes):
        (root / str(c)).mkdir(parents=True, exist_ok=True)
        images = digits.images[digits.target == c][:per_class]
        for i, img in enumerate(images):
            pixels = (img * 255 / 16).astype(np.uint8)
            Image.fromarray(pixels).resize((size, size)).save(root / str(c) / f"{i}.png")
    return root


@pytest.fixture
def digit_folder(tmp_path: Path) -> Path:
    return write_digit_folder(tmp_path / "digits_folder")
