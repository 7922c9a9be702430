"""What a trial's training depends on up to each epoch: the key that lets grid points share a common prefix.

Every `TrialConfig` field has a scope (`SCOPES`): it acts from the first epoch, from the first proxy step, from the
second proxy step, through the schedule, or never on training. `prefix_key(config, e)` hashes exactly what can
change the model, optimiser and proxies after `e` epochs, so two configs with the same key at `e` hold bit-for-bit
the same checkpoint there (every epoch's randomness derives from (seed, epoch)). A checkpoint records its key, and a
trial resumes from any checkpoint whose key equals its own at that epoch: its own, a retry's, or a shared stem's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from trainer.config import TrialConfig, proxy_step_epochs

START, FIRST_PROXY_STEP, SECOND_PROXY_STEP, SCHEDULE, NEVER = "start", "proxy", "second_proxy", "schedule", "never"
SCOPES: dict[str, str] = {
    "dataset": START,
    "image_size": START,
    "split": START,
    "batch_size": START,
    "architecture": START,
    "pretrained": START,
    "pretrained_path": START,
    "augmentation": START,
    "augment": START,
    "class_loss_weight": START,
    "saliency_loss_weight": START,
    "invariance_loss_weight": START,
    "optimizer": START,
    "scheduler": START,
    "label_smoothing": START,
    "mixed_precision": START,
    "seed": START,
    # The proxy step: which images, which maps, which pixels (the CAMs also depend on their batching).
    "cam_method": FIRST_PROXY_STEP,
    "cam_target": FIRST_PROXY_STEP,
    "cam_batch_size": FIRST_PROXY_STEP,
    "threshold": FIRST_PROXY_STEP,
    "multiply_weight": FIRST_PROXY_STEP,
    "wrong_subset": FIRST_PROXY_STEP,
    "pixel_replacement": FIRST_PROXY_STEP,
    "unchanged_proxies": FIRST_PROXY_STEP,
    "control": FIRST_PROXY_STEP,
    # Clearing earlier proxies only differs once there are earlier proxies.
    "clear_every_step": SECOND_PROXY_STEP,
    "proxy_steps": SCHEDULE,
    # Loader processes, and a metric computed from the finished history.
    "num_workers": NEVER,
    "target_val_accuracy": NEVER,
}
# Schedules that read the trial's progress (epoch / total) depend on the total number of epochs from the start.
PROGRESS_SCHEDULERS = ("onecycle", "cosine")
CAM_GROUP_FIELDS = ("cam_method", "cam_target", "cam_batch_size")


def proxy_boundaries(config: TrialConfig) -> list[int]:
    """The epoch count before each proxy step: "5,p,9,p,4" -> [5, 14]."""
    return proxy_step_epochs(config.proxy_steps)


def prefix_key(config: TrialConfig, epochs: int, steps_done: int | None = None) -> str:
    """A hash of everything that shapes training after `epochs` epochs and `steps_done` proxy steps (by default
    the steps before epoch `epochs`; one more once the step due at `epochs` has run): the start fields, the total
    epochs when the learning rate reads progress, the positions of the steps done, the proxy-step fields when
    there is one, and `clear_every_step` when there are two."""
    boundaries = proxy_boundaries(config)
    due_before = sum(1 for b in boundaries if b < epochs)
    steps_done = due_before if steps_done is None else steps_done
    if not 0 <= epochs <= config.epochs or not due_before <= steps_done <= sum(1 for b in boundaries if b <= epochs):
        raise ValueError(f"no such point in {config.proxy_steps!r}: {epochs} epochs, {steps_done} proxy steps")
    data = config.to_dict()
    parts: dict[str, Any] = {name: data[name] for name, scope in SCOPES.items() if scope == START}
    parts["total_epochs"] = config.epochs if config.scheduler.name in PROGRESS_SCHEDULERS else None
    before = boundaries[:steps_done]
    parts["proxy_steps_before"] = before
    if before:
        parts["proxy"] = {name: data[name] for name, scope in SCOPES.items() if scope == FIRST_PROXY_STEP}
    if len(before) >= 2:
        parts["clear_every_step"] = config.clear_every_step
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def cam_group(config: TrialConfig) -> dict[str, Any]:
    """What the maps of a proxy step depend on beyond the prefix: method, target and CAM batch size."""
    return {name: getattr(config, name) for name in CAM_GROUP_FIELDS}


def cam_group_key(config: TrialConfig, epochs: int) -> str:
    """The key of the shared input of the proxy step after `epochs` epochs: the wrong images and their CAMs."""
    blob = json.dumps({"prefix": prefix_key(config, epochs), **cam_group(config)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _check_scopes() -> None:
    fields = {f.name for f in dataclasses.fields(TrialConfig)}
    if set(SCOPES) != fields:
        missing, extra = sorted(fields - set(SCOPES)), sorted(set(SCOPES) - fields)
        raise AssertionError(
            f"trainer.prefix.SCOPES must classify every TrialConfig field: missing {missing}, unknown {extra}"
        )


_check_scopes()
