"""Can `architecture` run at `image_size`, and give non-constant maps with `cam_method`? `check` answers before
anything is created (space validation) and again at the start of every trial (`search trial` included).

What a model is (its family, the size of its CAM feature map) is measured once per (architecture, size) with a
shape-only forward on PyTorch's `meta` device and remembered in the user's cache directory, keyed by the torch and
timm versions: a grid of fifty thousand points checks its twenty models without importing torch the second time.
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import logging
from typing import Any

from trainer.config import CAM_METHOD_NAMES
from trainer.errors import ModelError
from trainer.families import CAM_UNSUITABLE
from trainer.files import atomic_write_json, default_cache_dir

log = logging.getLogger("trainer")


SIZES = (32, 48, 64, 96, 128, 160, 192, 224, 256, 320, 384, 448, 512)


def check(architecture: str, cam_method: str | None, image_size: int) -> None:
    """Raise `ModelError` unless `architecture` builds at `image_size` and `cam_method` (None: no CAM) can give
    non-constant maps on it."""
    facts = model_facts(architecture, image_size)
    if facts["error"]:
        raise ModelError(facts["error"])
    if cam_method is None:
        return
    if cam_method not in CAM_METHOD_NAMES:
        raise ModelError(f"unknown CAM method {cam_method!r} (allowed: {', '.join(CAM_METHOD_NAMES)})", "cam_method")
    families, why = CAM_UNSUITABLE.get(cam_method, ((), ""))
    if facts["family"] in families:
        raise ModelError(f"{cam_method} does not work on {architecture}: {facts['family']} {why}", "cam_method")
    h, w = facts["map"]
    if h * w <= 1:
        smallest = next((s for s in SIZES if s > image_size and _map_area(architecture, s) > 1), None)
        advice = f"image_size {smallest} or more" if smallest else "a larger image_size"
        raise ModelError(
            f"{architecture} at {image_size} px has a {h}x{w} CAM feature map, so every "
            f"{cam_method} map would be constant: use {advice}",
            "image_size",
        )


def _map_area(architecture: str, image_size: int) -> int:
    facts = model_facts(architecture, image_size)
    return 0 if facts["error"] or not facts["map"] else facts["map"][0] * facts["map"][1]


@functools.cache
def model_facts(architecture: str, image_size: int) -> dict[str, Any]:
    """{"error": why it cannot run or None, "family": class name, "map": [h, w] of the CAM feature map}."""
    cache = _disk_cache()
    key = f"{architecture}@{image_size}"
    if key not in cache:
        from trainer.models import measure  # imports torch and timm: only for a model not seen yet

        cache[key] = measure(architecture, image_size)
        try:
            atomic_write_json(_cache_file(), cache)
        except OSError as exc:  # a read-only home: measure again next time
            log.debug("model-check cache not written: %s", exc)
    return cache[key]


def _cache_file():
    versions = "-".join(importlib.metadata.version(p) for p in ("torch", "timm"))
    return default_cache_dir() / f"model-checks-{versions}.json"


@functools.cache
def _disk_cache() -> dict[str, Any]:
    try:
        return json.loads(_cache_file().read_text())
    except (OSError, ValueError):
        return {}
