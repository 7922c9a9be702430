"""Small spaces for orchestrator tests: real digits, tiny models, trials of a second or two."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from search.space import GridSpec, parse_space

BASE = {
    "study": "tiny",
    "objective": {"metric": "val_accuracy", "direction": "maximize"},
    "repeats": 1,
    "max_attempts": 2,
    "resources": {"cpus_per_trial": 1, "gpus_per_trial": 0},
    "datasets": {"digits": {"kind": "digits", "limit_per_class": 20}},
    "fixed": {"image_size": 64, "batch_size": 32, "architecture": "test_resnet", "proxy_steps": "1,p,1",
              "optimizer": {"name": "adamw", "lr": 0.003}},
    "grid": {"cam_method": ["gradcam", "eigencam"], "threshold": [0.3, 0.6]},
}


def space(**changes) -> dict:
    """BASE with top-level keys replaced (`grid=`, `fixed=`…); a value of None removes the key."""
    data = copy.deepcopy(BASE)
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return data


def fixed_without(*keys: str) -> dict:
    """BASE's fixed: minus `keys` (to make one of them an axis)."""
    return {k: v for k, v in BASE["fixed"].items() if k not in keys}


def spec(**changes) -> GridSpec:
    return parse_space(space(**changes), Path("test.yaml"))


def write_space(path: Path, **changes) -> Path:
    path.write_text(yaml.safe_dump(space(**changes)))
    return path
