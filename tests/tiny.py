"""The one tiny space and the one tiny trial config of the tests and the benchmarks: real digits, the tiny ResNet,
trials of a second or two on a CPU. Overrides replace top-level keys; a value of None removes the key."""

from __future__ import annotations

import copy
from typing import Any

TINY_FIXED: dict[str, Any] = {
    "image_size": 48,  # test_resnet's smallest with more than one CAM cell (2×2)
    "batch_size": 32,
    "architecture": "test_resnet",
    "proxy_steps": "1,p,1",
    "optimizer": {"name": "adamw", "lr": 0.003},
}
TINY_SPACE: dict[str, Any] = {
    "study": "tiny",
    "objective": {"metric": "val_accuracy", "direction": "maximize"},
    "repeats": 1,
    "max_attempts": 2,
    "resources": {"cpus_per_trial": 1, "gpus_per_trial": 0},
    # 120 images: a warm trial takes ~0.6 CPU-s at 48 px (0.84 at 64, 1.4 on 200 images), and the suite runs ~340
    "datasets": {"digits": {"kind": "digits", "limit_per_class": 12}},
    "fixed": TINY_FIXED,
    "grid": {"cam_method": ["gradcam", "eigencam"], "threshold": [0.3, 0.6]},
}
TINY_CONFIG: dict[str, Any] = {
    "dataset": {"kind": "digits", "limit_per_class": 30},
    **TINY_FIXED,
    "image_size": 64,  # the trainer's own tests look at CAMs and proxies: 4×4 maps
    "cam_method": "gradcam",
    "threshold": 0.5,
    "multiply_weight": 0.5,
    "wrong_subset": 1.0,
    "seed": 0,
}

# What depends on the machine and the moment, not on the computation: left out when runs are compared.
TIMING = {
    "train_seconds",
    "proxy_seconds",
    "own_compute_seconds",
    "own_train_seconds",
    "trial_seconds",
    "peak_rss_mb",
    "seconds",
    "ray_node",
    "gpu_ids",
}


def _with(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    data = copy.deepcopy(base)
    for key, value in overrides.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return data


def tiny_space(**overrides: Any) -> dict[str, Any]:
    """A space of four points (two CAM methods × two thresholds, one seed) on 120 digits."""
    return _with(TINY_SPACE, overrides)


def tiny_fixed(**overrides: Any) -> dict[str, Any]:
    """The tiny space's `fixed:` with `overrides` (`proxy_steps="2,p,2"`)."""
    return _with(TINY_FIXED, overrides)


def tiny_config(**overrides: Any) -> dict[str, Any]:
    """A digits trial config that trains in about a second per epoch on the CPU."""
    return _with(TINY_CONFIG, overrides)
