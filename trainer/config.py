"""The resolved configuration of one trial: typed, validated, and round-tripped through JSON.

A `TrialConfig` is exactly what `config.json` in a trial folder holds and what `search trial CONFIG.json` takes.
`TrialConfig.from_dict` checks every key and type and raises `ConfigError` naming the field path; omitted fields take
the defaults below.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from trainer.errors import ConfigError
from trainer.schedule import Schedule, parse_schedule

DATASET_KINDS = (
    "digits",
    "fashion_mnist",
    "imagefolder",
    "cifar10",
    "cifar100",
    "food101",
    "imagenette",
    "flowers102",
    "oxford_pets",
)
# Kinds whose publishers name a test part (`split: {test: official}` uses it as the test set).
OFFICIAL_TEST_KINDS = ("fashion_mnist", "cifar10", "cifar100", "food101", "imagenette", "flowers102", "oxford_pets")
# A trial's torch CPU threads (`search trial --threads`, a space's cpus_per_trial) at most: beyond it a typo, not
# a machine (torch starts that many threads).
MAX_THREADS = 1024
PIXEL_REPLACEMENTS = ("blended", "black", "mean", "max", "min", "halfmax")
# Every pytorch-grad-cam method that applies to classification (the registry is `trainer.cams.CAM_METHODS`).
CAM_METHOD_NAMES = (
    "gradcam",
    "gradcamplusplus",
    "xgradcam",
    "hirescam",
    "layercam",
    "gradcamelementwise",
    "eigencam",
    "eigengradcam",
    "kpcacam",
    "scorecam",
    "ablationcam",
    "fullgrad",
    "shapleycam",
    "finercam",
    "fem",
    "randomcam",
)
# `cam_method` values that make proxies without a CAM: `duplicate` copies the chosen wrong images unmasked (does
# seeing hard examples twice explain a gain?). Random masks are the CAM method `randomcam`. Both are the unmatched
# controls (`trainer.prefix.UNMATCHED_CONTROLS`).
MASKLESS_METHODS = ("duplicate",)
PROXY_METHODS = CAM_METHOD_NAMES + MASKLESS_METHODS
UNCHANGED_PROXIES = ("drop", "keep")
# The matched controls (`control:`): a configuration's own proxy step, its pixels moved or its masks left off.
MATCHED_CONTROLS = ("random_location", "matched_duplicate")
CONTROL_CHOICES = ("none", *MATCHED_CONTROLS)
AUGMENTATIONS = (
    "none",
    "flip",
    "cutout",
    "random_erasing",
    "hide_and_seek",
    "gridmask",
    "augmix",
    "mixup",
    "cutmix",
    "resizemix",
    "smoothmix",
    "ricap",
    "samplepairing",
    "saliencymix",
    "snapmix",
    "attentive_cutmix",
)
FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"  # where Debian's dataset-fashion-mnist puts it
OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULERS = ("none", "onecycle", "cosine", "step")
CAM_TARGETS = ("true", "predicted")
# Every closed set of names a config takes, by field path: one form (a tuple), checked in one place (`validate`).
CHOICES: dict[str, tuple[str, ...]] = {
    "dataset.kind": DATASET_KINDS,
    "cam_method": PROXY_METHODS,
    "cam_target": CAM_TARGETS,
    "pixel_replacement": PIXEL_REPLACEMENTS,
    "unchanged_proxies": UNCHANGED_PROXIES,
    "control": CONTROL_CHOICES,
    "augmentation": AUGMENTATIONS,
    "optimizer.name": OPTIMIZERS,
    "scheduler.name": SCHEDULERS,
}


@dataclass(frozen=True)
class DatasetConfig:
    """Where the images come from: a kind (`digits`, `fashion_mnist`, `imagefolder`, or a torchvision dataset)."""

    kind: str
    root: str | None = None
    download: bool = False
    limit_per_class: int | None = None


@dataclass(frozen=True)
class SplitConfig:
    """Fractions of each class held out for validation and test; the rest trains. `test: official` uses the
    publisher's test part (torchvision datasets, Fashion-MNIST) and draws val from the rest. `test_seed` draws the
    test part once, with that seed, for every trial (and every confirmation of the study): the trial's seed then
    draws only val from the rest, so no trial ever trains or selects on an image another one is tested on."""

    val: float = 0.15
    test: float | Literal["official"] = 0.15
    test_seed: int | None = None


# Fields added after studies existed: left out of every hash while at their default, so that the digests and
# checkpoint keys of those studies' trials stay what they were.
LATE_FIELDS: dict[type, tuple[str, ...]] = {SplitConfig: ("test_seed",)}


@dataclass(frozen=True)
class OptimizerConfig:
    name: str = "adamw"
    lr: float = 1.0e-3
    weight_decay: float = 0.0
    momentum: float = 0.9


@dataclass(frozen=True)
class SchedulerConfig:
    """Learning-rate schedule over the whole trial, set on every batch (see `trainer.learning_rate`)."""

    name: str = "none"
    max_lr: float | None = None
    pct_start: float = 0.3
    step_size: int = 1
    gamma: float = 0.1


@dataclass(frozen=True)
class AugmentConfig:
    """The parameters of each augmentation (see `trainer.augment` and `trainer.mixing`)."""

    max_degrees: float = 10.0  # flip: rotation range
    cutout_size: float = 0.5  # cutout: side of the square, as a fraction of the image side
    erasing_probability: float = 0.5  # random_erasing
    hide_grid: int = 4  # hide_and_seek: patches per side
    hide_probability: float = 0.5  # hide_and_seek
    gridmask_ratio: float = 0.6  # gridmask: kept fraction of each grid period
    augmix_severity: int = 3  # augmix
    mix_alpha: float = 1.0  # mixup, cutmix, saliencymix, snapmix: λ ~ Beta(α, α)
    resize_min: float = 0.1  # resizemix: scale range of the pasted image
    resize_max: float = 0.8
    ricap_beta: float = 0.3  # ricap: boundary ~ Beta(β, β)
    attentive_grid: int = 7  # attentive_cutmix: grid cells per side
    attentive_cells: int = 6  # attentive_cutmix: cells pasted


@dataclass(frozen=True)
class TrialConfig:
    """Everything one training trial needs: the `fixed:` fields of a space, one value per grid axis, and the seed."""

    dataset: DatasetConfig
    image_size: int = 64
    split: SplitConfig = field(default_factory=SplitConfig)
    batch_size: int | Literal["auto"] = 32
    architecture: str = "resnet18"
    pretrained: bool = False
    pretrained_path: str | None = None
    cam_method: str = "gradcam"  # or a control: "duplicate" (no mask), "randomcam" (random maps)
    cam_target: str = "true"  # the class a CAM explains: CAM_TARGETS
    cam_batch_size: int = 32
    threshold: float = 0.5
    multiply_weight: float = 0.5
    proxy_steps: str = "1,p,1"
    wrong_subset: float = 1.0
    clear_every_step: bool = False
    pixel_replacement: str = "blended"
    unchanged_proxies: str = "drop"  # proxies a CAM left identical to their source: UNCHANGED_PROXIES
    control: str = "none"  # a matched control of this config: MATCHED_CONTROLS, or none
    augmentation: str = "flip"
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    class_loss_weight: float = 1.0  # α of Al-afandi et al. 2022, eq. 8
    saliency_loss_weight: float = 0.0  # β: saliency-map consistency between original and augmented images
    invariance_loss_weight: float = 0.0  # γ: logit invariance (eq. 6)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    label_smoothing: float = 0.0
    mixed_precision: bool = False
    target_val_accuracy: float | None = None
    num_workers: int = 0
    seed: int = 0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialConfig:
        """Build and validate a config from plain data (parsed JSON or YAML); raise `ConfigError` on any problem."""
        config = _build(cls, data, "")
        validate(config)
        return config

    @classmethod
    def from_json_file(cls, path: str | Path) -> TrialConfig:
        """Read a `config.json`; a parse error or invalid field raises `ConfigError` naming the file."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read JSON ({exc})") from None
        try:
            return cls.from_dict(data)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data; `TrialConfig.from_dict(c.to_dict()) == c`."""
        return dataclasses.asdict(self)

    def digest(self) -> str:
        """A hash of every field that can change a result (`num_workers` cannot; a late field at its default
        neither)."""
        data = hashable(self)
        data.pop("num_workers")
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    @functools.cached_property
    def schedule(self) -> Schedule:
        """`proxy_steps` parsed (once: `validate` reads it when the config is built)."""
        return parse_schedule(self.proxy_steps)

    @property
    def epochs(self) -> int:
        """Total training epochs: the sum of the integers in `proxy_steps`."""
        return self.schedule.epochs


def _in(low: float, high: float, low_open: bool = False, high_open: bool = False) -> Callable[[float], bool]:
    def inside(v: float) -> bool:
        return (v > low if low_open else v >= low) and (v < high if high_open else v <= high)

    return inside


INF = math.inf
# Every number a trial takes, with its range: checked when a config is built, never first inside a trial. (Floats
# are finite before they get here: `_coerce` refuses nan and inf.) field path -> (in range?, what is expected)
RANGES: dict[str, tuple[Callable[[float], bool], str]] = {
    "image_size": (_in(16, 1024), "an integer in [16, 1024]"),
    "dataset.limit_per_class": (_in(1, INF), "a positive integer"),
    "cam_batch_size": (_in(1, INF), "a positive integer"),
    "threshold": (_in(0, 1), "a number in [0, 1]"),
    "multiply_weight": (_in(0, 1), "a number in [0, 1]"),
    "wrong_subset": (_in(0, 1, low_open=True), "a fraction in (0, 1]"),
    "augment.max_degrees": (_in(0, 180), "degrees in [0, 180]"),
    "augment.cutout_size": (_in(0, 1, low_open=True), "a number in (0, 1]"),
    "augment.erasing_probability": (_in(0, 1, low_open=True), "a number in (0, 1]"),
    "augment.hide_probability": (_in(0, 1, low_open=True), "a number in (0, 1]"),
    "augment.gridmask_ratio": (_in(0, 1, low_open=True), "a number in (0, 1]"),
    "augment.resize_min": (_in(0, 1, low_open=True), "a number in (0, 1]"),
    "augment.resize_max": (_in(0, 1, low_open=True), "a number in (0, 1]"),
    "augment.mix_alpha": (_in(0, INF, low_open=True), "a positive number"),
    "augment.ricap_beta": (_in(0, INF, low_open=True), "a positive number"),
    "augment.hide_grid": (_in(1, INF), "a positive integer"),
    "augment.attentive_grid": (_in(1, INF), "a positive integer"),
    "augment.augmix_severity": (_in(1, 10), "an integer in 1-10"),
    "class_loss_weight": (_in(0, INF), "a non-negative number"),
    "saliency_loss_weight": (_in(0, INF), "a non-negative number"),
    "invariance_loss_weight": (_in(0, INF), "a non-negative number"),
    "optimizer.lr": (_in(0, INF, low_open=True), "a positive number"),
    "optimizer.weight_decay": (_in(0, INF), "a non-negative number"),
    "optimizer.momentum": (_in(0, 1, high_open=True), "a number in [0, 1)"),
    "scheduler.max_lr": (_in(0, INF, low_open=True), "a positive number"),
    "scheduler.pct_start": (_in(0, 1, True, True), "a fraction in (0, 1)"),
    "scheduler.step_size": (_in(1, INF), "a positive integer"),
    "scheduler.gamma": (_in(0, 1, low_open=True), "a factor in (0, 1]"),
    "label_smoothing": (_in(0, 1, high_open=True), "a number in [0, 1)"),
    "target_val_accuracy": (_in(0, 1), "an accuracy in [0, 1]"),
    "num_workers": (_in(0, INF), "a non-negative integer"),
    "seed": (_in(0, INF), "a non-negative integer"),
    "split.test_seed": (_in(0, 2**32 - 1), "an integer in [0, 2³² − 1] (numpy's seeds)"),
}


def validate(config: TrialConfig) -> None:
    """Check value ranges (`RANGES`) and names that types alone cannot; raise `ConfigError` naming the field."""

    def need(ok: bool, path: str, expected: str, value: Any) -> None:
        if not ok:
            raise ConfigError(f"{path}: expected {expected}, got {value!r}")

    ds = config.dataset
    for path, choices in CHOICES.items():
        value = _at(config, path)
        need(value in choices, path, f"one of {', '.join(choices)}", value)
    need(ds.kind in ("digits", "fashion_mnist") or bool(ds.root), "dataset.root", "a folder path", ds.root)
    for path, (inside, expected) in RANGES.items():
        value = _at(config, path)
        if value is not None and not isinstance(value, str):
            need(inside(value), path, expected, value)
    need(0 < config.split.val < 1, "split.val", "a fraction in (0, 1)", config.split.val)
    if config.split.test == "official":
        need(
            ds.kind in OFFICIAL_TEST_KINDS,
            "split.test",
            f"a fraction (official needs a dataset with an official test part: {', '.join(OFFICIAL_TEST_KINDS)})",
            config.split.test,
        )
    else:
        need(0 < config.split.test < 1, "split.test", "a fraction in (0, 1) or 'official'", config.split.test)
        need(config.split.val + config.split.test < 1, "split", "val + test < 1", dataclasses.asdict(config.split))
    need(
        config.batch_size == "auto" or config.batch_size >= 1,
        "batch_size",
        "a positive integer or 'auto'",
        config.batch_size,
    )
    need(
        config.control == "none" or config.cam_method in CAM_METHOD_NAMES,
        "control",
        "none with the unmatched controls (a matched control copies a CAM method's own proxy step)",
        config.control,
    )
    need(
        config.pretrained_path is None or bool(config.pretrained_path.strip()),
        "pretrained_path",
        "a file path",
        config.pretrained_path,
    )
    config.schedule  # noqa: B018 (parsing it is the check)
    aug = config.augment
    need(aug.resize_min <= aug.resize_max, "augment.resize_min", "at most resize_max", aug.resize_min)
    need(
        1 <= aug.attentive_cells <= aug.attentive_grid**2,
        "augment.attentive_cells",
        "between 1 and attentive_grid²",
        aug.attentive_cells,
    )


def hashable(value: Any) -> Any:
    """A config (or one of its parts) as plain data for hashing: `dataclasses.asdict` without its deep copies (the
    planner hashes hundreds of thousands of prefixes), less each dataclass's LATE_FIELDS while at their default."""
    names = getattr(type(value), "__dataclass_fields__", None)  # is_dataclass and fields, at a tenth of the cost
    if names is None:
        return value
    late = LATE_FIELDS.get(type(value), ())
    return {
        name: hashable(getattr(value, name))
        for name, spec in names.items()
        if not (name in late and getattr(value, name) == spec.default)
    }


def _at(config: Any, path: str) -> Any:
    """The value at a dotted field path (`optimizer.name`)."""
    for part in path.split("."):
        config = getattr(config, part)
    return config


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)  # resolving the annotations is slow: once per class


def _build(cls: type, data: Any, prefix: str) -> Any:
    """Instantiate dataclass `cls` from `data`, checking keys and types recursively."""
    where = prefix.rstrip(".") or "config"
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = _type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{prefix}{unknown[0]}: unknown field (allowed: {', '.join(fields)})")
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _coerce(hints[name], data[name], prefix + name)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{prefix}{name}: required field is missing")
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, path: str) -> Any:
    """Return `value` checked against type `hint` (ints accepted where floats are expected)."""
    if dataclasses.is_dataclass(hint):
        return _build(typing.cast(type, hint), value, path + ".")
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            try:
                return _coerce(option, value, path)
            except ConfigError:
                continue
        raise ConfigError(f"{path}: expected {_describe(hint)}, got {value!r}")
    if origin is Literal:
        if value in typing.get_args(hint):
            return value
        raise ConfigError(f"{path}: expected {_describe(hint)}, got {value!r}")
    if value is True and any("true" in c and (path == k or path.endswith(f".{k}")) for k, c in CHOICES.items()):
        return "true"  # YAML reads an unquoted `true` as a boolean; `cam_target: true` means the true class
    if hint is type(None):
        if value is None:
            return None
    elif hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(f"{path}: expected a finite number, got {value!r}")
            return float(value)
    elif hint is str and isinstance(value, str):
        return value
    raise ConfigError(f"{path}: expected {_describe(hint)}, got {value!r}")


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(h) for h in typing.get_args(hint))
    if origin is Literal:
        return " or ".join(repr(v) for v in typing.get_args(hint))
    if hint is type(None):
        return "null"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(hint, str(hint))
