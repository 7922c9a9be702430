"""What acts when: each setting's scope, the one prefix rule, the CAM groups, and the settings a point ignores.

Every `TrialConfig` field has a scope (`SCOPES`): it acts from the first epoch, from the first proxy step, from the
second proxy step, through the schedule, or never on training. `prefix_signature` says exactly what can change the
model, optimiser and proxies after a number of epochs and proxy steps; `prefix_key` hashes it for one config, and
the planner (`search.planning.plan`) groups a grid's points by it, so two configs with the same key at `e` hold
bit-for-bit
the same checkpoint there (every epoch's randomness derives from (seed, epoch)). A checkpoint records its key, and
a trial resumes from any checkpoint whose key equals its own at that epoch: its own, a retry's, or a shared stem's.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import json
from collections.abc import Callable
from typing import Any

from trainer.config import MASKLESS_METHODS, TrialConfig, hashable
from trainer.schedule import Schedule, parse_schedule

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
START_FIELDS = tuple(name for name, scope in SCOPES.items() if scope == START)
PROXY_FIELDS = tuple(name for name, scope in SCOPES.items() if scope == FIRST_PROXY_STEP)
# The proxy-attention axes: they act from a proxy step on (a point without one leaves them out).
CAM_AXES = tuple(name for name, scope in SCOPES.items() if scope in (FIRST_PROXY_STEP, SECOND_PROXY_STEP))
# Schedules that read the trial's progress (epoch / total) depend on the total number of epochs from the start.
PROGRESS_SCHEDULERS = ("onecycle", "cosine")
CAM_GROUP_FIELDS = ("cam_method", "cam_target", "cam_batch_size")
UNMATCHED_CONTROLS = (*MASKLESS_METHODS, "randomcam")  # cam_method values that are controls (not matched)
MASK_AXES = (
    "threshold",
    "multiply_weight",
    "pixel_replacement",
    "cam_target",
    "cam_batch_size",
    "unchanged_proxies",
)  # what a mask needs; the duplicate control has none
DECIDERS = ("proxy_steps", "cam_method", "pixel_replacement", "control")  # what `irrelevant` reads, in its order

Setting = Callable[[str], Any]  # a field's value by name: a config's, or (in the planner) a column of many points'


def prefix_signature(setting: Setting, schedule: Schedule, steps_done: int, progress: bool) -> dict[str, Any]:
    """Everything that shapes training once the first `steps_done` proxy steps of `schedule` are made: the start
    fields, the total epochs when the learning rate reads progress (`progress`), the positions of the steps done,
    the proxy-step fields when there is one, and `clear_every_step` when there are two. `setting(name)` gives a
    field's value; the planner passes integer codes, many points at once, and groups by what comes back."""
    before = schedule.boundaries[:steps_done]
    parts: dict[str, Any] = {name: setting(name) for name in START_FIELDS}
    parts["total_epochs"] = schedule.epochs if progress else None
    parts["proxy_steps_before"] = list(before)
    if before:
        parts["proxy"] = {name: setting(name) for name in PROXY_FIELDS}
    if len(before) >= 2:
        parts["clear_every_step"] = setting("clear_every_step")
    return parts


def prefix_key(config: TrialConfig, epochs: int, steps_done: int | None = None) -> str:
    """The hash of `prefix_signature` after `epochs` epochs and `steps_done` proxy steps (by default the steps
    before epoch `epochs`; one more once the step due at `epochs` has run)."""
    schedule = config.schedule
    due_before = schedule.steps_before(epochs)
    steps_done = due_before if steps_done is None else steps_done
    if not 0 <= epochs <= schedule.epochs or not due_before <= steps_done <= schedule.steps_through(epochs):
        raise ValueError(f"no such point in {config.proxy_steps!r}: {epochs} epochs, {steps_done} proxy steps")
    parts = prefix_signature(
        functools.partial(_plain, config), schedule, steps_done, config.scheduler.name in PROGRESS_SCHEDULERS
    )
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _plain(config: TrialConfig, name: str) -> Any:
    """A field of `config` as its digest has it (`trainer.config.hashable`)."""
    return hashable(getattr(config, name))


def cam_group(setting: Setting) -> dict[str, Any]:
    """What the maps of a proxy step depend on beyond the prefix: method, target and CAM batch size (a control
    without a map: its method alone)."""
    method = setting("cam_method")
    if method in MASKLESS_METHODS:
        return {"cam_method": method}
    return {name: setting(name) for name in CAM_GROUP_FIELDS}


def cam_group_key(config: TrialConfig, epochs: int) -> str:
    """The key of the shared input of the proxy step after `epochs` epochs: the wrong images and their CAMs."""
    blob = json.dumps(
        {"prefix": prefix_key(config, epochs), **cam_group(functools.partial(getattr, config))}, sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class PointKind(enum.StrEnum):
    """What a grid point is: a `baseline` (no proxy step), a `control` (the `duplicate` and `randomcam` methods, or
    a matched control) or a `proxy` configuration. Stored on every trial as its plain value."""

    PROXY = "proxy"
    BASELINE = "baseline"
    CONTROL = "control"


@functools.lru_cache(maxsize=4096)
def irrelevant(
    proxy_steps: str, cam_method: str, pixel_replacement: str, control: str = "none"
) -> tuple[frozenset[str], PointKind]:
    """The axes that cannot change a point with these settings, and its kind: `baseline` (no proxy step),
    `control` (the `duplicate` and `randomcam` methods, or a matched control) or `proxy`."""
    steps = parse_schedule(proxy_steps).steps
    if steps == 0:
        return frozenset(CAM_AXES), PointKind.BASELINE
    kind = PointKind.CONTROL if cam_method in UNMATCHED_CONTROLS or control != "none" else PointKind.PROXY
    drop: set[str] = set()
    if cam_method in MASKLESS_METHODS:
        drop.update(MASK_AXES)  # no mask at all
    elif pixel_replacement != "blended":
        drop.add("multiply_weight")  # only the blended rule reads the weight
    if steps == 1:
        drop.add("clear_every_step")  # it only acts from the second proxy step
    return frozenset(drop), kind


def _check_scopes() -> None:
    fields = {f.name for f in dataclasses.fields(TrialConfig)}
    if set(SCOPES) != fields:
        missing, extra = sorted(fields - set(SCOPES)), sorted(set(SCOPES) - fields)
        raise AssertionError(
            f"trainer.prefix.SCOPES must classify every TrialConfig field: missing {missing}, unknown {extra}"
        )


_check_scopes()
