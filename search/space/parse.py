"""A space YAML -> a frozen, validated `GridSpec` (`search.space.grid`), every problem found before anything is created.

Validation collects every problem; `SpaceError` carries them all, each naming the file, the key path and what is
allowed. Its cost follows what must be checked, not the number of points: the size is a product of axis lengths
(a space above `max_points` is refused before anything is enumerated), each (architecture, CAM method, image size)
is checked once, each axis value once.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
from fractions import Fraction
from pathlib import Path
from typing import Any

from search.space.design import design_problems
from search.space.grid import CONFIG_FIELDS, SCALAR_AXES, GridSpec, size_bound
from search.space.names import study_name_problem
from search.space.spacecheck import check_models, check_rules, check_values, root_problems
from search.space.spacefile import SpaceFileError, read_space_file
from trainer.config import (
    DATASET_KINDS,
    MAX_THREADS,
    ConfigError,
    DatasetConfig,
    _build,
)
from trainer.errors import ProxySearchError
from trainer.schedule import parse_schedule

TOP_KEYS = (
    "study",
    "objective",
    "repeats",
    "seeds_from",
    "max_attempts",
    "resources",
    "datasets",
    "fixed",
    "grid",
    "baselines",
    "halving",
    "artifacts",
    "cache_dir",
    "confirms",
    "test_overlap",
    "design",
)
# What a study may maximise or minimise: metrics every trial reports, per epoch too (for halving and live curves).
OBJECTIVES = {"val_accuracy": "maximize", "val_accuracy_best": "maximize", "val_loss": "minimize"}
DEFAULT_MAX_POINTS = 1_000_000
MAX_LINE = 300
GPUS_ABOVE_ONE = (
    "at most 1: a trial trains on one GPU (there is no DataParallel/DDP here); use 1, or a fraction such as 0.5 "
    "to share one"
)
HINTS = {
    "lr": "optimizer.lr",
    "learning_rate": "optimizer.lr",
    "weight_decay": "optimizer.weight_decay",
    "momentum": "optimizer.momentum",
    "max_lr": "scheduler.max_lr",
    "epochs": 'proxy_steps (its numbers are the epochs: "40", or "20,p,19" with a proxy step after epoch 20)',
    "val": "split.val",
    "test": "split.test",
    "model": "architecture",
    "cam": "cam_method",
}


class SpaceError(ProxySearchError, ValueError):
    """A space file is invalid; `problems` lists every problem found, one line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class _Problems:
    def __init__(self, path: Path) -> None:
        self.path, self.lines = path, list[str]()

    def __call__(self, key: str, message: str) -> None:
        line = f"{self.path}: {key}: {message}"
        # A value is echoed to help, never to flood: a huge one (an alias bomb's, say) is cut to one line.
        self.lines.append(line if len(line) <= MAX_LINE else line[: MAX_LINE - 1] + "…")

    def raise_any(self) -> None:
        if self.lines:
            raise SpaceError(self.lines)


def load_space(
    path: str | Path, study: str | None = None, check_roots: bool = True, max_points: int = DEFAULT_MAX_POINTS
) -> GridSpec:
    """Read and validate a space YAML; `study` overrides its name. Raise `SpaceError` listing every problem.
    `check_roots=False` accepts dataset roots that do not exist yet (see `root_problems`)."""
    path = Path(path)
    try:
        raw = read_space_file(path)
    except SpaceFileError as exc:
        raise SpaceError([str(exc)]) from None
    design = raw.get("design") if isinstance(raw, dict) else None
    if isinstance(design, dict) and (recorded := sorted(set(design) - {"budget", "seed", "precision", "adapt"})):
        raise SpaceError(
            [
                f"{path}: design.{recorded[0]}: the study's record of its design, written by `search run`, never by "
                "hand; a space gives design: {budget: 5% | 1200h | 120configs, seed: INTEGER, adapt: BOOL, "
                "precision: 0.5pp} only"
            ]
        )
    return parse_space(raw, path, study, check_roots, max_points)


def parse_space(
    raw: Any, path: Path, study: str | None = None, check_roots: bool = True, max_points: int = DEFAULT_MAX_POINTS
) -> GridSpec:
    """Validate already-parsed space data (`path` names it in messages and resolves relative dataset roots)."""
    problem = _Problems(path)
    if not isinstance(raw, dict):
        raise SpaceError([f"{path}: expected a mapping at the top level, got {type(raw).__name__}"])
    for key in raw:
        if key not in TOP_KEYS:
            problem(key, f"unknown key{_suggest(key, TOP_KEYS)} (allowed: {', '.join(TOP_KEYS)})")
    name = study if study is not None else raw.get("study", path.stem)
    if isinstance(name, (int, float)) and not isinstance(name, bool):
        problem("study", f"YAML reads {name!r} as a number; quote it to make it a name: study: '{name}'")
    elif (why := study_name_problem(name)) is not None:
        problem("study", why)
    # Relative paths in a space are relative to the space file, wherever `search run` is typed from.
    base = path.parent if path.suffix in (".yaml", ".yml") else Path.cwd()
    datasets = _datasets(raw.get("datasets"), problem, base)
    fixed = _fixed(raw.get("fixed"), problem)
    grid = _axes(raw.get("grid"), "grid", fixed, datasets, problem, required=True)
    raw_baselines = raw.get("baselines") or []
    if not isinstance(raw_baselines, list):
        problem("baselines", "expected a list of mappings")
        raw_baselines = []
    baselines = [
        _axes(entry, f"baselines[{i}]", fixed, datasets, problem, required=False)
        for i, entry in enumerate(raw_baselines)
    ]
    if "dataset" not in grid and len(datasets) > 1:
        problem("grid.dataset", f"required when datasets: names {len(datasets)} datasets")
    data = {
        "study": name,
        "objective": _objective(raw.get("objective"), problem),
        **_counts(raw, problem),
        "resources": _resources(raw.get("resources"), problem),
        "datasets": datasets,
        "fixed": fixed,
        "grid": grid,
        "baselines": baselines,
        "halving": _halving(raw.get("halving"), problem),
        "artifacts": _location(raw, "artifacts", problem, base),
        "cache_dir": _location(raw, "cache_dir", problem, base),
        **({"confirms": raw["confirms"]} if "confirms" in raw else {}),
        **({"test_overlap": raw["test_overlap"]} if raw.get("test_overlap") else {}),
        **({"design": raw["design"]} if raw.get("design") is not None else {}),
    }
    for key, message in design_problems(raw["design"]) if "design" in raw else []:
        problem(key, message)
    if "design" in raw and "confirms" in raw:
        problem("design", "a confirmation runs its few configurations whole: it has no design")
    if "test_overlap" in raw and (not isinstance(raw["test_overlap"], bool) or "confirms" not in raw):
        problem("test_overlap", "true or false, in a confirmation only (search confirm --allow-test-overlap)")
    if "confirms" in raw and study_name_problem(raw["confirms"]) is not None:
        problem("confirms", f"expected the name of the exploration study it confirms, got {raw['confirms']!r}")
    problem.raise_any()
    bound, sizes = size_bound(data)
    if bound > max_points:
        problem(
            "grid",
            f"{bound:,} points ({'; '.join(sizes)}) is above the limit of {max_points:,} (raise it with --max-points)",
        )
        problem.raise_any()
    check_values(data, problem)
    problem.raise_any()
    check_rules(data, problem)
    check_models(data, problem)
    if check_roots:
        for line in root_problems(data):
            problem.lines.append(f"{path}: {line}")
    problem.raise_any()
    return GridSpec(name, data)


def _suggest(word: str, allowed: tuple[str, ...] | list[str]) -> str:
    if word in HINTS:
        return f"; did you mean {HINTS[word]}?"
    close = difflib.get_close_matches(str(word), list(allowed), n=1, cutoff=0.75)
    return f"; did you mean {close[0]}?" if close else ""


def _objective(raw: Any, problem: _Problems) -> dict[str, str]:
    if raw is None:
        return {"metric": "val_accuracy", "direction": "maximize"}
    if not isinstance(raw, dict) or set(raw) - {"metric", "direction"}:
        problem("objective", "expected {metric: NAME, direction: maximize|minimize}")
        return {"metric": "val_accuracy", "direction": "maximize"}
    metric = raw.get("metric", "val_accuracy")
    allowed = "val_accuracy (the final model's), val_accuracy_best (its best epoch's) or val_loss (the final's)"
    if str(metric).startswith("test_"):
        problem(
            "objective.metric",
            f"{metric} would choose the best configuration on the test set, which then "
            f"reports an optimistic test score; use {allowed}",
        )
    elif metric not in OBJECTIVES:
        problem("objective.metric", f"{metric!r} is not a metric every trial reports per epoch; use {allowed}")
    natural = OBJECTIVES.get(metric, "maximize")
    direction = raw.get("direction", natural)
    if direction not in ("maximize", "minimize"):
        problem("objective.direction", f"expected maximize or minimize, got {direction!r}")
    elif metric in OBJECTIVES and direction != natural:
        problem("objective.direction", f"{metric} is only ever {natural}d")
    return {"metric": metric, "direction": direction}


def _counts(raw: dict, problem: _Problems) -> dict[str, int]:
    counts = {}
    for key, default, low in (("repeats", 1, 1), ("max_attempts", 2, 1), ("seeds_from", 0, 0)):
        value = raw.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            problem(key, f"expected a {'positive' if low else 'non-negative'} integer, got {value!r}")
            value = default
        if key != "seeds_from" or value:  # seeds 0.. are the default: a space without the key keeps its form
            counts[key] = value
    return counts


def resource_problem(key: str, value: Any) -> str | None:
    """What is wrong with `value` for `gpus_per_trial` or `cpus_per_trial` (from a space or a flag), or None."""
    if (
        not isinstance(value, (int, float))
        or isinstance(value, bool)
        or not math.isfinite(value)  # NaN passes every comparison below
        or value < 0
        or (key == "cpus_per_trial" and value == 0)
    ):
        return f"expected a {'positive' if key == 'cpus_per_trial' else 'non-negative'} finite number, got {value!r}"
    if key == "gpus_per_trial" and value > 1:
        return f"{GPUS_ABOVE_ONE}, got {value!r}"
    if key == "cpus_per_trial" and value > MAX_THREADS:
        return f"at most {MAX_THREADS} (a trial's torch threads), got {value!r}"
    return None


def _resources(raw: Any, problem: _Problems) -> dict[str, float]:
    raw = raw or {}
    if not isinstance(raw, dict) or set(raw) - {"gpus_per_trial", "cpus_per_trial"}:
        problem("resources", "expected {gpus_per_trial: NUMBER, cpus_per_trial: NUMBER}")
        raw = {}
    resources = {"gpus_per_trial": raw.get("gpus_per_trial", 0), "cpus_per_trial": raw.get("cpus_per_trial", 1)}
    for key, value in resources.items():
        if (why := resource_problem(key, value)) is not None:
            problem(f"resources.{key}", why)
    return resources


def _location(raw: dict, key: str, problem: _Problems, base: Path) -> str | None:
    value = raw.get(key)
    if value is not None and (not isinstance(value, str) or not value):
        problem(key, f"expected a path or URL, got {value!r}")
        return None
    if value is not None and "://" not in value:  # a path: absolute, from the space file's folder
        return str((base / Path(value).expanduser()).resolve())
    return value


def _datasets(raw: Any, problem: _Problems, base: Path) -> dict[str, dict]:
    if not isinstance(raw, dict) or not raw:
        problem("datasets", "expected a mapping of names to {kind: ..., root: ...}")
        return {}
    out = {}
    for name, entry in raw.items():
        if (why := study_name_problem(name, "dataset")) is not None:  # it names files in the store
            problem(f"datasets.{str(name)[:60]}", why)
            continue
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
            data["root"] = str(root if root.is_absolute() else (base / root).resolve())
        out[str(name)] = data
    return out


def _fixed(raw: Any, problem: _Problems) -> dict:
    fixed = raw or {}
    if not isinstance(fixed, dict):
        problem("fixed", f"expected a mapping of TrialConfig fields, got {type(fixed).__name__}")
        return {}
    allowed = [f for f in CONFIG_FIELDS if f not in ("dataset", "seed")]
    if "proxy_steps" in fixed:  # read before the points can be counted: checked first, like an axis's values
        try:
            parse_schedule(fixed["proxy_steps"])
        except ConfigError as exc:
            problem("fixed.proxy_steps", str(exc).split(": ", 1)[1])
    for key in fixed:
        if key not in allowed:
            problem(
                f"fixed.{key}",
                f"unknown field{_suggest(key, allowed)} (allowed: {', '.join(allowed)}; "
                "datasets come from datasets:, seeds from repeats:)",
            )
    return fixed


def _axes(raw: Any, where: str, fixed: dict, datasets: dict, problem: _Problems, required: bool) -> dict[str, list]:
    """Validate one mapping of axis -> list of values (a scalar means a one-value list in baselines)."""
    if not isinstance(raw, dict) or (required and not raw):
        problem(where, "expected a mapping of axis names to lists of values")
        return {}
    allowed = ["dataset", *(a for a in SCALAR_AXES if a != "seed")]
    axes = {}
    for axis, values in raw.items():
        key = f"{where}.{axis}"
        if axis not in allowed:
            problem(
                key, f"unknown axis{_suggest(axis, allowed)} (allowed: {', '.join(allowed)}; seeds come from repeats:)"
            )
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
        if len({_same_value(v) for v in values}) != len(values):
            problem(key, f"repeats a value: {values!r} (1 and 1.0 are one value)")
        if axis == "dataset":
            for v in values:
                if v not in datasets:
                    problem(key, f"{v!r} is not a name under datasets: ({', '.join(datasets) or 'none'})")
        if axis == "proxy_steps":
            for v in values:
                try:
                    parse_schedule(v)
                except ConfigError as exc:
                    problem(key, str(exc).split(": ", 1)[1])
                    break
        axes[axis] = values
    return axes


def _same_value(value: Any) -> str:
    """A value as the trial sees it: 1 and 1.0 are one threshold (true stays distinct from 1)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return json.dumps(float(value))
    return json.dumps(value)


def _halving(raw: Any, problem: _Problems) -> dict | None:
    """`halving: {rungs: [EPOCH, …], keep: 1/3, within: [AXIS, …]}` (successive halving, opt-in)."""
    if raw is None:
        return None
    if not isinstance(raw, dict) or set(raw) - {"rungs", "keep", "within"} or "rungs" not in raw:
        problem("halving", "expected {rungs: [EPOCH, ...], keep: FRACTION, within: [AXIS, ...]}")
        return None
    rungs = raw["rungs"]
    if (
        not isinstance(rungs, list)
        or not rungs
        or any(not isinstance(r, int) or isinstance(r, bool) or r < 1 for r in rungs)
        or rungs != sorted(set(rungs))
    ):
        problem("halving.rungs", f"expected increasing positive epoch numbers, got {rungs!r}")
    keep = raw.get("keep", "1/3")
    try:
        fraction = float(Fraction(str(keep)))
    except (ValueError, ZeroDivisionError):
        fraction = -1.0
    if not 0 < fraction < 1:
        problem("halving.keep", f"expected a fraction in (0, 1) such as 1/3 or 0.5, got {keep!r}")
    within = raw.get("within")
    if within is not None and (not isinstance(within, list) or any(not isinstance(a, str) for a in within)):
        problem("halving.within", f"expected a list of axis names, got {within!r}")
        within = []
    if within is not None and "seed" in within:
        problem(
            "halving.within",
            "seed would keep a configuration only on the seeds where it looked good, then compare those survivors "
            "(a biased comparison): a configuration is kept or stopped on all its seeds together; leave seed out",
        )
    return {
        "rungs": rungs,
        "keep": fraction,
        "keep_text": str(keep),
        "within": None if within is None else sorted(within),
    }
