"""A space YAML (DESIGN §3) -> a frozen, validated `GridSpec` whose `points()` are the grid, one `grid_key` each.

Validation runs completely before anything is created and collects every problem; `SpaceError` carries them all,
each naming the file, the key path and what is allowed. A point's `grid_key` hashes its canonical params, so the
order of values in the YAML never matters.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import json
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from trainer.config import (DATASET_KINDS, ConfigError, DatasetConfig, SplitConfig, TrialConfig, _build,
                            parse_proxy_steps)

STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")
TOP_KEYS = ("study", "objective", "repeats", "max_attempts", "resources", "datasets", "fixed", "grid", "baselines")
# The proxy-attention axes; baseline points leave them out (they make no proxies).
CAM_AXES = ("cam_method", "cam_target", "threshold", "multiply_weight", "wrong_subset", "clear_every_step",
            "pixel_replacement")
CONFIG_FIELDS = {f.name: f for f in dataclasses.fields(TrialConfig)}
SCALAR_AXES = tuple(n for n, h in typing.get_type_hints(TrialConfig).items()
                    if n != "dataset" and not dataclasses.is_dataclass(h))
OBJECTIVE_METRICS = ("val_accuracy", "val_accuracy_final", "val_loss", "test_accuracy", "test_f1_macro",
                     "train_seconds")


class SpaceError(ValueError):
    """A space file is invalid; `problems` lists every problem found, one line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Point:
    """One grid point: its axis values (`params`, seed included) and the trial config they resolve to."""

    params: dict[str, Any]
    resolved: dict[str, Any]
    baseline: bool
    grid_key: str

    def config(self) -> TrialConfig:
        """The validated `TrialConfig` of this point (built on demand: a large grid has many points)."""
        return TrialConfig.from_dict(self.resolved)

    def setting(self, name: str) -> Any:
        """A top-level config value of this point, its default when unset."""
        return self.resolved.get(name, CONFIG_FIELDS[name].default)


@dataclass(frozen=True)
class GridSpec:
    """A validated space. `data` is its canonical form, stored on the study so `search resume` needs no YAML."""

    name: str
    data: dict[str, Any]

    @property
    def objective(self) -> tuple[str, str]:
        return self.data["objective"]["metric"], self.data["objective"]["direction"]

    @property
    def max_attempts(self) -> int:
        return self.data["max_attempts"]

    @property
    def resources(self) -> dict[str, float]:
        return self.data["resources"]

    def digest(self) -> str:
        """Hash of what must not change within a study: `fixed:`, the datasets and the objective."""
        keep = {k: self.data[k] for k in ("fixed", "datasets", "objective")}
        return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]

    @functools.cached_property
    def points(self) -> list[Point]:
        """Every point: the grid's Cartesian product and each baseline entry, each times `repeats` seeds;
        duplicates removed, sorted by grid_key for a stable order."""
        return _expand(self.data)


def grid_key(params: dict[str, Any]) -> str:
    """The canonical hash of a point's params."""
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]


def load_space(path: str | Path, study: str | None = None, check_roots: bool = True) -> GridSpec:
    """Read and validate a space YAML; `study` overrides its name. Raise `SpaceError` listing every problem.
    `check_roots=False` accepts dataset roots that do not exist yet (see `missing_roots`)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise SpaceError([f"{path}: cannot read: {exc.strerror}"]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise SpaceError([f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}"]) from None
    return parse_space(raw, path, study, check_roots)


def parse_space(raw: Any, path: Path, study: str | None = None, check_roots: bool = True) -> GridSpec:
    """Validate already-parsed space data (`path` names it in messages and resolves relative dataset roots)."""
    problems: list[str] = []

    def problem(key: str, message: str) -> None:
        problems.append(f"{path}: {key}: {message}")

    if not isinstance(raw, dict):
        raise SpaceError([f"{path}: expected a mapping at the top level, got {type(raw).__name__}"])
    for key in raw:
        if key not in TOP_KEYS:
            problem(key, f"unknown key (allowed: {', '.join(TOP_KEYS)})")

    name = study or raw.get("study") or path.stem
    if not isinstance(name, str) or not STUDY_NAME.match(name):
        problem("study", f"{name!r} is not a valid study name (letters, digits, '_', '.', '-'; "
                         "starting with a letter or digit)")
    objective = raw.get("objective", {"metric": "val_accuracy", "direction": "maximize"})
    if not isinstance(objective, dict) or set(objective) - {"metric", "direction"}:
        problem("objective", "expected {metric: NAME, direction: maximize|minimize}")
        objective = {"metric": "val_accuracy", "direction": "maximize"}
    objective = {"metric": objective.get("metric", "val_accuracy"),
                 "direction": objective.get("direction", "maximize")}
    if objective["metric"] not in OBJECTIVE_METRICS:
        problem("objective.metric", f"expected one of {', '.join(OBJECTIVE_METRICS)}, got {objective['metric']!r}")
    if objective["direction"] not in ("maximize", "minimize"):
        problem("objective.direction", f"expected maximize or minimize, got {objective['direction']!r}")

    counts = {}
    for key, default in (("repeats", 1), ("max_attempts", 2)):
        value = raw.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            problem(key, f"expected a positive integer, got {value!r}")
            value = default
        counts[key] = value

    resources = raw.get("resources") or {}
    if not isinstance(resources, dict) or set(resources) - {"gpus_per_trial", "cpus_per_trial"}:
        problem("resources", "expected {gpus_per_trial: NUMBER, cpus_per_trial: NUMBER}")
        resources = {}
    resources = {"gpus_per_trial": resources.get("gpus_per_trial", 0), "cpus_per_trial": resources.get(
        "cpus_per_trial", 1)}
    for key, value in resources.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0 or (
                key == "cpus_per_trial" and value == 0):
            problem(f"resources.{key}", f"expected a {'positive' if key == 'cpus_per_trial' else 'non-negative'} "
                                        f"number, got {value!r}")

    datasets = _parse_datasets(raw.get("datasets"), problem, check_roots)
    fixed = raw.get("fixed") or {}
    if not isinstance(fixed, dict):
        problem("fixed", f"expected a mapping of TrialConfig fields, got {type(fixed).__name__}")
        fixed = {}
    if check_roots:
        _check_folders(datasets, fixed, problem)
    for key in fixed:
        if key not in CONFIG_FIELDS or key in ("dataset", "seed"):
            problem(f"fixed.{key}", "unknown field (allowed: TrialConfig fields except dataset and seed)")

    grid = _parse_axes(raw.get("grid"), "grid", fixed, datasets, problem, required=True)
    baselines = []
    raw_baselines = raw.get("baselines") or []
    if not isinstance(raw_baselines, list):
        problem("baselines", "expected a list of mappings")
        raw_baselines = []
    for i, entry in enumerate(raw_baselines):
        baselines.append(_parse_axes(entry, f"baselines[{i}]", fixed, datasets, problem, required=False))

    if "dataset" not in grid and len(datasets) > 1:
        problem("grid.dataset", f"required when datasets: names {len(datasets)} datasets")
    if problems:
        raise SpaceError(problems)

    data = {"study": name, "objective": objective, **counts, "resources": resources, "datasets": datasets,
            "fixed": fixed, "grid": grid, "baselines": baselines}
    _check_values(data, problem)
    if problems:
        raise SpaceError(problems)
    spec = GridSpec(name, data)
    _check_points(spec, problem)
    if problems:
        raise SpaceError(problems)
    return spec


def missing_roots(spec: GridSpec) -> list[str]:
    """The datasets whose root does not exist and will not be downloaded, as `name: root` lines."""
    return [f"{name}: {ds['root']}" for name, ds in spec.data["datasets"].items()
            if ds["root"] and not ds["download"] and not Path(ds["root"]).exists()]


def _parse_datasets(raw: Any, problem, check_roots: bool) -> dict[str, dict]:
    if not isinstance(raw, dict) or not raw:
        problem("datasets", "expected a mapping of names to {kind: ..., root: ...}")
        return {}
    out = {}
    for name, entry in raw.items():
        try:
            ds = _build(DatasetConfig, entry, f"datasets.{name}.")
        except ConfigError as exc:
            key, _, message = str(exc).partition(": ")
            problem(key, message)
            continue
        if ds.kind not in DATASET_KINDS:
            problem(f"datasets.{name}.kind", f"expected one of {', '.join(DATASET_KINDS)}, got {ds.kind!r}")
            continue
        data = dataclasses.asdict(ds)
        if ds.root is not None:
            root = Path(ds.root).expanduser()
            root = root if root.is_absolute() else Path.cwd() / root
            if check_roots and not ds.download and not root.exists():
                problem(f"datasets.{name}.root", f"{ds.root} does not exist (set download: true to fetch it)")
            data["root"] = str(root)
        out[str(name)] = data
    return out


def _check_folders(datasets: dict[str, dict], fixed: dict, problem) -> None:
    """Image folders that cannot make a trial (too few classes or images) are bad input, found now."""
    from trainer.data import DataError, check_image_folder  # loads torch: only when validating a new space

    try:
        split = _build(SplitConfig, fixed.get("split", {}), "fixed.split.")
    except ConfigError:
        return  # reported with the other fixed: problems
    for name, ds in datasets.items():
        if ds["kind"] == "imagefolder" and Path(ds["root"]).exists():
            try:
                check_image_folder(Path(ds["root"]), split)
            except DataError as exc:
                problem(f"datasets.{name}.root", str(exc).removeprefix("imagefolder: "))


def _parse_axes(raw: Any, where: str, fixed: dict, datasets: dict, problem, required: bool) -> dict[str, list]:
    """Validate one mapping of axis -> list of values (a scalar means a one-value list in baselines)."""
    if not isinstance(raw, dict) or (required and not raw):
        problem(where, "expected a mapping of axis names to lists of values")
        return {}
    axes = {}
    for axis, values in raw.items():
        key = f"{where}.{axis}"
        if axis != "dataset" and axis not in SCALAR_AXES or axis == "seed":
            problem(key, f"unknown axis (allowed: dataset, {', '.join(a for a in SCALAR_AXES if a != 'seed')})")
            continue
        if axis in fixed and required:  # a baseline may override fixed: (that is its point)
            problem(key, "is also set in fixed:; an axis cannot be both")
        if not isinstance(values, list):
            if required:
                problem(key, f"expected a list of values, got {values!r}")
                continue
            values = [values]
        if not values:
            problem(key, "is empty; an axis needs at least one value")
            continue
        if any(isinstance(v, (dict, list)) for v in values):
            problem(key, "values must be scalars (numbers, strings, true/false)")
            continue
        if len({json.dumps(v) for v in values}) != len(values):
            problem(key, f"repeats a value: {values!r}")
        if axis == "dataset":
            for v in values:
                if v not in datasets:
                    problem(key, f"{v!r} is not a name under datasets: ({', '.join(datasets) or 'none'})")
        if axis == "proxy_steps":
            for v in values:
                try:
                    parse_proxy_steps(v)
                except ConfigError as exc:
                    problem(key, str(exc).split(": ", 1)[1])
        axes[axis] = values
    return axes


def _check_values(data: dict, problem) -> None:
    """Check `fixed:` and every axis value on its own, so that each bad value is reported once, by its key."""
    first_dataset = next(iter(data["datasets"].values()), None)
    if first_dataset is None:
        return

    def attempt(overrides: dict, where: str) -> None:
        try:
            TrialConfig.from_dict({**data["fixed"], **overrides, "dataset": first_dataset})
        except ConfigError as exc:
            field, _, message = str(exc).partition(": ")
            problem(f"{where}.{field}" if where == "fixed" else where, message or str(exc))

    attempt({}, "fixed")
    blocks = [("grid", data["grid"])] + [(f"baselines[{i}]", b) for i, b in enumerate(data["baselines"])]
    for where, axes in blocks:
        for axis, values in axes.items():
            if axis == "dataset":
                continue
            for value in values:
                attempt({axis: value}, f"{where}.{axis}")


def _check_points(spec: GridSpec, problem) -> None:
    """Check each (architecture, CAM method, image size) of the grid once, before anything is made."""
    from trainer.models import ModelError, check  # loads torch and timm: only when validating a new space

    reported: set[str] = set()
    combos = {(p.setting("architecture"), p.setting("cam_method") if "p" in parse_proxy_steps(
        p.setting("proxy_steps")) else None, p.setting("image_size")) for p in spec.points}
    for combo in sorted(combos, key=str):
        try:
            check(*combo)
        except ModelError as exc:
            if str(exc) not in reported:
                reported.add(str(exc))
                problem("grid", str(exc))


def _expand(data: dict) -> list[Point]:
    grid, fixed, datasets = data["grid"], data["fixed"], data["datasets"]
    blocks = [(grid, False)]
    for entry in data["baselines"]:
        rest = {k: v for k, v in grid.items() if k not in entry and k not in CAM_AXES}
        blocks.append(({**rest, **entry}, True))
    points: dict[str, Point] = {}
    for axes, baseline in blocks:
        names = sorted(axes)
        for values in itertools.product(*(axes[n] for n in names)):
            for seed in range(data["repeats"]):
                params = {**dict(zip(names, values)), "seed": seed}
                dataset_name = params.get("dataset", next(iter(datasets)))
                resolved = {**fixed, **{k: v for k, v in params.items() if k != "dataset"},
                            "dataset": datasets[dataset_name]}
                key = grid_key(params)
                points.setdefault(key, Point(params, resolved, baseline, key))
    return [points[k] for k in sorted(points)]
