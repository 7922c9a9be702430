"""What a plan costs: epochs to train × seconds per epoch, per (dataset, architecture), in GPU-hours (or CPU-hours)
and in wall time, naive, with shared stems and with halving. Pure arithmetic over the plan, with each rate's evidence
said beside it, best first: epochs this study already trained (its completed trials' train seconds per epoch), a
calibration written by `bench/gpu_check.py` on a named GPU (images/s per architecture at a size), or a stated rough
default scaled by images × pixels × the architecture's relative cost. Training epochs only: proxy steps and
evaluation come on top.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from search.planning.plan import Plan
from search.records import record
from search.space.grid import GridSpec, Point
from trainer.config import DatasetConfig
from trainer.files import default_cache_dir

CALIBRATION = "calibration.json"
ROUGH_IMAGES_PER_S = 1500.0  # resnet18 at 224 px with mixed precision on one current GPU: a rough default
ROUGH_CPU_IMAGES_PER_S = 15.0  # resnet18 at 224 px on 2 CPU threads (177 images/s at 64 px, measured here)
# Training cost relative to resnet18 at the same size (forward+backward FLOPs, rounded); others count as 1.
RELATIVE_COST = {
    "resnet18": 1.0,
    "resnet34": 2.0,
    "resnet50": 2.3,
    "efficientnet_b0": 0.9,
    "vgg16": 8.5,
    "vit_base_patch16_224": 9.6,
    "vit_small_patch16_224": 2.5,
    "convnext_tiny": 2.5,
}
# A trial's fixed cost beyond its training epochs (process and model start, the data opened, evaluation, result):
# measured here on 2 CPU cores for the tiny models of the quickstart (~6 s); a study's own trials replace it.
DEFAULT_TRIAL_OVERHEAD_S = 6.0
# Images of the datasets whose size is known without reading them (train and official test parts pooled).
# (images, classes) of the datasets whose size is fixed: a `limit_per_class` keeps at most limit × classes.
KNOWN_SIZES = {
    "digits": (1797, 10),
    "fashion_mnist": (70000, 10),
    "mnist": (70000, 10),
    "cifar10": (60000, 10),
    "cifar100": (60000, 100),
    "food101": (101000, 101),
    "imagenette": (13394, 10),
    "flowers102": (8189, 102),
    "oxford_pets": (7349, 37),
}


@dataclass(frozen=True)
class Rate:
    """Seconds per training epoch, where the figure comes from, and the share of a device the epoch held for those
    seconds (a trial measured on half a GPU held half of it; a calibrated or rough rate is a whole device's)."""

    seconds: float
    evidence: str
    share: float = 1.0


def calibration_file() -> Path:
    """Where `bench/gpu_check.py` writes its images/s per architecture (this machine's cache folder)."""
    return default_cache_dir() / CALIBRATION


def dataset_images(dataset: DatasetConfig) -> int | None:
    """The number of images of a dataset entry, when it can be known without decoding (None otherwise)."""
    if dataset.kind in KNOWN_SIZES:
        images, classes = KNOWN_SIZES[dataset.kind]
        limit = dataset.limit_per_class
        return images if not limit else min(images, limit * classes)
    if dataset.kind == "imagefolder" and dataset.root:
        from trainer.data.imagefolder import summarize_folder
        from trainer.errors import FolderError

        try:
            return sum(summarize_folder(Path(dataset.root)).images.values())
        except FolderError:
            return None
    return None


def rate(
    point: Point,
    spec: GridSpec,
    measured: dict[tuple, list[float]],
    calibration: dict | None,
    resources: dict[str, float] | None = None,
    elsewhere: tuple[str, dict[tuple, list[float]]] | None = None,
) -> Rate | None:
    """Seconds per training epoch of `point` with `resources` (default: the space's): measured in this study, else
    in the study `elsewhere` names (a confirmation's exploration: the same models on the same data), else
    calibrated, else the rough default."""
    resources = resources or spec.resources
    dataset = spec.dataset_of(point)
    arch, size = point.setting("architecture"), int(point.setting("image_size"))
    share = resources["gpus_per_trial"] or 1.0
    seen = measured.get((dataset, arch, size))
    if seen:
        return Rate(statistics.median(seen), f"measured: {len(seen)} completed trials of this study", share)
    there = elsewhere[1].get((dataset, arch, size)) if elsewhere else None
    if there and elsewhere:
        return Rate(statistics.median(there), f"measured: {len(there)} completed trials of {elsewhere[0]}", share)
    images = dataset_images(spec.datasets[dataset])
    if images is None:
        return None
    split = point.setting("split") or {}
    held_out = split.get("val", 0.15) + (split.get("test", 0.15) if isinstance(split.get("test"), float) else 0.15)
    train = images * (1 - held_out)
    for row in (calibration or {}).get("rows", []):
        if row.get("architecture") == arch and row.get("images_per_s"):
            per_s = row["images_per_s"] * (row["image_size"] / size) ** 2
            device = (calibration or {}).get("device")
            return Rate(train / per_s, f"calibrated on {device} by bench/gpu_check.py")
    cost = RELATIVE_COST.get(arch, 1.0)
    gpu = bool(resources["gpus_per_trial"])
    base = ROUGH_IMAGES_PER_S if gpu else ROUGH_CPU_IMAGES_PER_S * resources["cpus_per_trial"] / 2
    per_s = base * (224 / size) ** 2 / cost
    return Rate(
        train / per_s,
        f"rough default: {base:,.0f} images/s for resnet18 at 224 px on {'one GPU' if gpu else 'this trial’s CPUs'}, "
        f"÷{cost:g} for this architecture, scaled by pixels",
    )


def measured_rates(trials: list[FrozenTrial], spec: GridSpec) -> dict[tuple, list[float]]:
    """Train seconds per epoch of this study's completed trials, per (dataset, architecture, image size)."""
    points = {p.grid_key: p for p in spec.points}
    out: dict[tuple, list[float]] = {}
    for t in trials:
        point = points.get(str(record.grid_key_of(t)))
        seconds, epochs = record.metric(t, "train_seconds"), record.metric(t, "epochs")
        if t.state != TrialState.COMPLETE or point is None or not seconds or not epochs:
            continue
        dataset = spec.dataset_of(point)
        key = (dataset, point.setting("architecture"), int(point.setting("image_size")))
        out.setdefault(key, []).append(seconds / epochs)
    return out


def trial_overhead(trials: list[FrozenTrial]) -> tuple[float, str]:
    """Seconds a trial or a stem costs beyond its own training epochs, and the evidence: the median, over this
    study's completed trials, of the time the driver saw each take (from its start to its record: the job's
    dispatch, process, data, proxy steps, evaluation) less its own epochs' training; else
    `DEFAULT_TRIAL_OVERHEAD_S`."""
    seen = []
    for t in trials:
        own = record.metric(t, "own_train_seconds")
        own = record.metric(t, "own_compute_seconds") if own is None else own  # older trials: their whole compute
        if t.state != TrialState.COMPLETE or own is None or t.datetime_start is None or t.datetime_complete is None:
            continue
        seen.append(max(0.0, (t.datetime_complete - t.datetime_start).total_seconds() - float(own)))
    if seen:
        return statistics.median(
            seen
        ), f"{statistics.median(seen):.1f} s a job (trial or stem) beyond its epochs (measured)"
    return (
        DEFAULT_TRIAL_OVERHEAD_S,
        f"{DEFAULT_TRIAL_OVERHEAD_S:.0f} s a job (trial or stem) beyond its epochs (a default)",
    )


def load_calibration() -> dict | None:
    try:
        data = json.loads(calibration_file().read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def price(
    spec: GridSpec,
    pending: list[Point],
    plan: Plan,
    trials: list[FrozenTrial],
    halving_epochs: int | None,
    resources: dict[str, float] | None = None,
    elsewhere: tuple[str, list[FrozenTrial], GridSpec] | None = None,
) -> dict[str, Any]:
    """Per (dataset, architecture): epochs naive and shared, their hours and the rate's evidence; and the totals in
    device-hours (GPU-hours when trials have GPUs, else CPU-slot-hours), with halving scaled like its epochs.
    `resources` are the run's (the space's, or the flags that override them); `elsewhere` another study's trials
    whose rates and fixed costs stand in for this one's until it has its own (a confirmation's exploration).

    A device-hour is an hour of a whole device: an epoch's GPU-hours are its seconds times the share of the GPU it
    held. Sharing a GPU does not make an epoch's work smaller: a trial on 1/4 of a GPU takes about four times as
    long on it, so a calibrated or rough rate (a whole GPU's) is priced whatever the fraction."""
    resources = resources or spec.resources
    measured, calibration = measured_rates(trials, spec), load_calibration()
    there = (elsewhere[0], measured_rates(elsewhere[1], elsewhere[2])) if elsewhere else None
    overhead, overhead_evidence = trial_overhead(trials if trials or not elsewhere else elsewhere[1])
    shared_start = {p.grid_key: plan.start_epoch(p.grid_key) for p in pending}
    groups: dict[tuple, dict[str, Any]] = {}
    rates: dict[tuple, Rate] = {}
    for point in pending:
        dataset = spec.dataset_of(point)
        group = groups.setdefault(
            (dataset, point.setting("architecture")),
            {"naive": 0, "shared": 0, "seconds_naive": 0.0, "seconds_fixed": 0.0, "seconds_stems": 0.0, "rate": None},
        )
        epochs = point.schedule.epochs
        group["naive"] += epochs
        group["shared"] += epochs - shared_start[point.grid_key]
        same = (dataset, point.setting("architecture"), point.setting("image_size"), str(point.setting("split")))
        found = rates.get(same)
        if found is None:  # a rate depends on these alone: found once, not once per point of a large grid
            found = rates[same] = rate(point, spec, measured, calibration, resources, there) or Rate(
                math.nan, "unknown: its data is not there to count"
            )
        group["rate"] = found
        group["seconds_naive"] += epochs * found.seconds * found.share
        group["seconds_fixed"] += overhead * found.share
    by_key = {p.grid_key: p for p in pending}
    for stem in plan.stems.values():  # each stem's own epochs, once, in its members' group
        member = by_key.get(stem.representative)
        if member is not None:
            dataset = spec.dataset_of(member)
            parent = plan.stems[stem.parent].epochs if stem.parent else 0
            group = groups[(dataset, member.setting("architecture"))]
            group["shared"] += stem.epochs - parent
            group["seconds_stems"] += overhead * group["rate"].share  # a stem is a job too: its start, its CAMs
    for group in groups.values():
        per_epoch = group["seconds_naive"] / group["naive"] if group["naive"] else math.nan
        group["hours_naive"] = (group["seconds_naive"] + group["seconds_fixed"]) / 3600
        group["hours_shared"] = (group["shared"] * per_epoch + group["seconds_fixed"] + group["seconds_stems"]) / 3600
    known = [g for g in groups.values() if not math.isnan(g["hours_naive"])]
    shared = sum(g["hours_shared"] for g in known)
    return {
        "unit": "GPU-hours" if resources["gpus_per_trial"] else "CPU-slot-hours",
        "overhead": overhead_evidence,
        "groups": groups,
        "unknown": len(groups) - len(known),
        "hours_naive": sum(g["hours_naive"] for g in known),
        "hours_shared": shared,
        "hours_halving": None
        if halving_epochs is None or not plan.shared_epochs
        else shared * halving_epochs / plan.shared_epochs,
    }
