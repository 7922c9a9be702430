"""The points of a validated space: the Cartesian product of its axes, its baselines, its seeds.

A point's `params` are its axis values (seed included) with the settings that cannot change its training left out
(`trainer.prefix.irrelevant`): the CAM axes of a point without proxy steps, the mask settings of the `duplicate`
control, `multiply_weight` outside the `blended` rule, `clear_every_step` with a single proxy step. Two points that
differ only in such settings are the same experiment, so they are one point. Its `grid_key` hashes its params (the
order of values in the YAML never matters). A point's `kind` is `baseline` (no proxy step), `control` (the
`duplicate` and `randomcam` methods: the same wrong images unmasked, or masked at random) or `proxy`.
"""

from __future__ import annotations

import bisect
import contextlib
import copy
import dataclasses
import functools
import gc
import hashlib
import itertools
import json
import math
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

from trainer.config import DatasetConfig, TrialConfig
from trainer.prefix import CAM_AXES, DECIDERS, PointKind, irrelevant
from trainer.schedule import Schedule, parse_schedule

CONFIG_FIELDS = {f.name: f for f in dataclasses.fields(TrialConfig)}
DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrialConfig) if f.default is not dataclasses.MISSING}
SCALAR_AXES = tuple(
    n for n, h in typing.get_type_hints(TrialConfig).items() if n != "dataset" and not dataclasses.is_dataclass(h)
)


class Point(NamedTuple):
    """One grid point: its axis values (`params`, seed included), what it is, the axes left out because they
    cannot change it (`dropped`), and the space's fixed settings and dataset entry it resolves with. (A named
    tuple: immutable, and made twice as fast as a frozen dataclass, which counts at a million points.)"""

    params: dict[str, Any]
    kind: PointKind
    grid_key: str
    dropped: tuple[str, ...]
    fixed: dict[str, Any]
    dataset: dict[str, Any]

    @property
    def baseline(self) -> bool:
        """A point without proxy steps."""
        return self.kind == PointKind.BASELINE

    @property
    def resolved(self) -> dict[str, Any]:
        """The trial config of this point as plain data: `fixed:`, its axis values, its dataset entry."""
        return {**self.fixed, **{k: v for k, v in self.params.items() if k != "dataset"}, "dataset": self.dataset}

    def config(self) -> TrialConfig:
        """The validated `TrialConfig` of this point (built on demand: a large grid has many points)."""
        return TrialConfig.from_dict(self.resolved)

    @property
    def schedule(self) -> Schedule:
        """This point's `proxy_steps`, parsed."""
        return parse_schedule(str(self.setting("proxy_steps")))

    def setting(self, name: str) -> Any:
        """A top-level config value of this point; None for an axis that does not apply to it."""
        if name in self.dropped:
            return None
        if name in self.params:
            return self.params[name]
        return self.fixed.get(name, DEFAULTS.get(name))

    @property
    def configuration(self) -> Configuration:
        """What this point's seeds repeat (found once per point: a budget prices many designs of one grid)."""
        found = _CONFIGURATIONS.get(self.grid_key)
        if found is None:
            found = _CONFIGURATIONS[self.grid_key] = Configuration.of(self.params)
        return found


FAMILY_AXES = ("dataset", "architecture")  # a design is the same fraction within each of their combinations


class Configuration(NamedTuple):
    """A configuration: a point's params without the seed (what its seeds repeat). `family` is its dataset ×
    architecture (a design chooses the same configurations in every family), `settings` every other axis, `key`
    the hash of the settings (the name a recorded design gives it), `name` the params as canonical JSON (one
    configuration in one family: what halving stops and a confirmation selects), `text` the same as `k=v` text
    (the tables' `config` column)."""

    family: tuple[tuple[str, Any], ...]
    settings: dict[str, Any]
    key: str

    @classmethod
    def of(cls, params: dict[str, Any]) -> Configuration:
        """The configuration of a point's (or a trial's) params."""
        settings = {k: v for k, v in params.items() if k not in FAMILY_AXES and k != "seed"}
        return cls(tuple((a, params[a]) for a in FAMILY_AXES if a in params), settings, config_key(settings))

    @property
    def params(self) -> dict[str, Any]:
        """The params without the seed: family and settings."""
        return {**dict(self.family), **self.settings}

    @property
    def name(self) -> str:
        return json.dumps(self.params, sort_keys=True, default=str)

    @property
    def text(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in sorted(self.params.items())) or "(fixed)"


def grid_key(params: dict[str, Any]) -> str:
    """The canonical hash of a point's params."""
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]


def config_key(settings: dict[str, Any]) -> str:
    """The hash of a configuration's settings (`Configuration.settings`: without dataset, architecture and seed)."""
    text = json.dumps(settings, sort_keys=True)
    found = _CONFIG_KEYS.get(text)
    if found is None:  # a grid has few configurations and many points: each is hashed once
        found = _CONFIG_KEYS[text] = hashlib.sha256(text.encode()).hexdigest()[:16]
    return found


_CONFIG_KEYS: dict[str, str] = {}
_CONFIGURATIONS: dict[str, Configuration] = {}  # grid_key -> its configuration (a grid_key hashes the params)


def designed(points: list[Point], design: dict) -> list[Point]:
    """The points a recorded design runs, block by block (each block's in grid_key order): its configurations on
    its block's seed, and the baselines on every seed a block uses. Unmatched controls are left to the
    confirmation, which matches a control to each configuration it runs."""
    block_of = {(key, b["seed"]): i for i, b in enumerate(design["blocks"]) for key in b["configs"]}
    first_on: dict[int, int] = {}
    for i, b in enumerate(design["blocks"]):
        first_on.setdefault(b["seed"], i)
    ranked = []
    for point in points:
        seed = point.params["seed"]
        if point.kind == PointKind.PROXY:
            block = block_of.get((point.configuration.key, seed))
        else:
            block = first_on.get(seed) if point.kind == PointKind.BASELINE else None
        if block is not None:
            ranked.append((block, point.grid_key, point))
    return [point for _, _, point in sorted(ranked, key=lambda r: r[:2])]


def block_values(block: dict[str, list], fixed: dict[str, Any], axis: str) -> list:
    """The values `axis` takes in `block`: its own list, else the fixed value, else the default."""
    return block.get(axis, [fixed.get(axis, DEFAULTS.get(axis))])


def blocks(data: dict) -> list[dict[str, list]]:
    """The grid and each baseline entry as mappings of axis -> values (an entry is crossed with the grid axes it
    does not name; a block without proxy steps leaves out the CAM axes, which cannot act there)."""
    grid, fixed = data["grid"], data["fixed"]
    out = []
    for block in [grid] + [
        {**{k: v for k, v in grid.items() if k not in entry}, **entry} for entry in data["baselines"]
    ]:
        if not any(parse_schedule(str(s)).steps for s in block_values(block, fixed, "proxy_steps")):
            block = {k: v for k, v in block.items() if k not in CAM_AXES}
        out.append(block)
    return out


def size_bound(data: dict) -> tuple[int, list[str]]:
    """An upper bound of the number of points (before merging settings that cannot matter), computed without
    enumerating anything, and the sizes it multiplies, block by block (for the message that refuses a space)."""
    total, parts = 0, []
    for i, axes in enumerate(blocks(data)):
        count = math.prod(len(v) for v in axes.values()) * data["repeats"]
        total += count
        sizes = " × ".join(f"{a} {len(v)}" for a, v in sorted(axes.items()))
        parts.append(f"{'grid' if i == 0 else f'baselines[{i - 1}]'}: {sizes} × seeds {data['repeats']}")
    return total, parts


def iter_points(data: dict) -> Iterator[Point]:
    """Every point of every block, in no particular order, duplicates included."""
    fixed, datasets = data["fixed"], data["datasets"]
    base = {**DEFAULTS, **fixed}
    start = data.get("seeds_from", 0)  # a confirmation runs fresh seeds, disjoint from its exploration's
    seed_texts = [(seed, f'"seed": {seed}') for seed in range(start, start + data["repeats"])]
    for axes in blocks(data):
        # The axes that decide which others a point ignores come first: each choice of them drops its axes
        # once, and the rest is a plain product (a choice that drops a decider repeats nothing).
        deciding = [n for n in DECIDERS if n in axes]
        seen: set[tuple] = set()
        for chosen in itertools.product(*(axes[n] for n in deciding)):
            decided = dict(zip(deciding, chosen, strict=True))
            drop, kind = irrelevant(*(str(decided.get(n, base[n])) for n in DECIDERS))
            names = sorted(n for n in axes if n not in drop)
            signature = tuple(decided.get(n) for n in deciding if n not in drop)
            if signature in seen:
                continue
            seen.add(signature)
            values = [[decided[n]] if n in decided else axes[n] for n in names]
            # A point's key is `grid_key(params)`, built here from its values' JSON joined in name order (what
            # json.dumps(sort_keys=True) writes), the seed in its place: each value is encoded once (tested equal).
            texts = [[f"{json.dumps(n)}: {json.dumps(v)}" for v in vs] for n, vs in zip(names, values, strict=True)]
            cut = bisect.bisect_left(names, "seed")
            dropped = tuple(n for n in sorted(axes) if n in drop)
            dataset_at = names.index("dataset") if "dataset" in names else None
            for combination, text in zip(itertools.product(*values), itertools.product(*texts), strict=True):
                params = dict(zip(names, combination, strict=True))
                dataset = datasets[combination[dataset_at] if dataset_at is not None else next(iter(datasets))]
                head, tail = text[:cut], text[cut:]
                for seed, seed_text in seed_texts:
                    key = hashlib.sha256(("{" + ", ".join((*head, seed_text, *tail)) + "}").encode())
                    yield Point({**params, "seed": seed}, kind, key.hexdigest()[:16], dropped, fixed, dataset)


@contextlib.contextmanager
def lasting_objects() -> Iterator[None]:
    """Around code that makes a million small objects that live as long as the run (points, a plan, a tally):
    the cyclic collector, which would rescan them all every few thousand allocations (a third of a large dry
    run), is paused while they are made and then told to leave everything alive so far alone (gc.freeze).
    Neither holds any cycle, so reference counting still frees them."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def expand(data: dict) -> list[Point]:
    """Every distinct point, sorted by grid_key (a stable pseudo-random order: a grid stopped half-way has
    covered every axis)."""
    points: dict[str, Point] = {}
    with lasting_objects():
        for point in iter_points(data):
            points.setdefault(point.grid_key, point)
        return sorted(points.values(), key=_by_key)


def _by_key(point: Point) -> str:
    return point.grid_key


class Objective(NamedTuple):
    """What a study optimises: a metric of `trainer.metrics` and its direction. The one place that knows which way
    is better and what the objective is at an epoch (`val_accuracy_best`: the best validation accuracy so far)."""

    metric: str
    direction: str  # "maximize" or "minimize"

    @property
    def maximize(self) -> bool:
        return self.direction == "maximize"

    @property
    def sign(self) -> float:
        """+1 when larger is better, −1 when smaller is: `sign * value` is larger for a better value."""
        return 1.0 if self.maximize else -1.0

    def better(self, value: float | None, than: float | None) -> bool:
        """Whether `value` beats `than` (None: nothing yet, beaten by any value)."""
        if value is None:
            return False
        return than is None or self.sign * value > self.sign * than

    def best(self, values: list[float]) -> float | None:
        """The best of `values`, or None."""
        return (max if self.maximize else min)(values) if values else None

    def by_epoch(self, history: list[dict]) -> list[tuple[int, float | None]]:
        """The objective after each epoch of a trial's per-epoch rows (`metrics.jsonl`)."""
        if self.metric != "val_accuracy_best":
            return [(r["epoch"], r.get(self.metric)) for r in history]
        out: list[tuple[int, float | None]] = []
        best: float | None = None
        for row in history:
            value = row.get("val_accuracy")
            if value is not None:  # an epoch without a value has none of its own
                best = value if best is None else max(best, value)
            out.append((row["epoch"], None if value is None else best))
        return out


@dataclass(frozen=True)
class GridSpec:
    """A validated space (`search.space.parse.parse_space` makes one), read through typed properties. Its canonical
    form as plain data (`to_data`) is stored on the study, so `search resume` needs no YAML (`from_data`)."""

    name: str
    _data: dict[str, Any]

    @classmethod
    def from_data(cls, name: str, data: dict[str, Any]) -> GridSpec:
        """The space `to_data` wrote (a copy: the spec never shares its data with the caller)."""
        return cls(name, copy.deepcopy(data))

    @property
    def objective(self) -> Objective:
        return Objective(self._data["objective"]["metric"], self._data["objective"]["direction"])

    @property
    def fixed(self) -> dict[str, Any]:
        """`fixed:`: the settings every point shares."""
        return self._data["fixed"]

    @functools.cached_property
    def datasets(self) -> dict[str, DatasetConfig]:
        """`datasets:` by name."""
        return {name: DatasetConfig(**entry) for name, entry in self._data["datasets"].items()}

    @property
    def baselines(self) -> list[dict]:
        """`baselines:`: the baseline blocks."""
        return self._data["baselines"]

    @property
    def seeds(self) -> range:
        """The seeds every point runs on: `repeats` of them from `seeds_from` (a confirmation's are fresh)."""
        first = self._data.get("seeds_from", 0)
        return range(first, first + self._data["repeats"])

    @property
    def design(self) -> dict | None:
        """`design:` (a budget asked for, or the blocks the study recorded), or None."""
        return self._data.get("design") or None

    @property
    def confirms(self) -> str | None:
        """The exploration this space confirms (`search confirm` made it), or None."""
        return self._data.get("confirms") or None

    @property
    def stage(self) -> str:
        """ "confirmation" for a space `search confirm` made (it names the study it confirms), else "exploration"."""
        return "confirmation" if self.confirms else "exploration"

    @property
    def test_overlap(self) -> bool:
        """Whether a confirmation was allowed to share its exploration's per-seed test images."""
        return bool(self._data.get("test_overlap"))

    @property
    def artifacts(self) -> str | None:
        """`artifacts:` (where trial folders go), or None."""
        return self._data.get("artifacts")

    @property
    def cache_dir(self) -> str | None:
        """`cache_dir:`, or None."""
        return self._data.get("cache_dir")

    def to_data(self) -> dict[str, Any]:
        """The space as plain data (a copy): what the study stores, and what `from_data` reads back."""
        return copy.deepcopy(self._data)

    def with_design(self, design: dict | None) -> GridSpec:
        """This space with `design` (None: without one, every point of the grid)."""
        data = copy.deepcopy({k: v for k, v in self._data.items() if k != "design"})
        return GridSpec(self.name, data if design is None else {**data, "design": design})

    @property
    def max_attempts(self) -> int:
        return self._data["max_attempts"]

    @property
    def resources(self) -> dict[str, float]:
        return self._data["resources"]

    @property
    def halving(self) -> dict[str, Any] | None:
        return self._data.get("halving")

    def lasting(self) -> dict[str, Any]:
        """What must not change within a study: `fixed:`, the datasets and the objective, by section."""
        return {k: self._data[k] for k in ("fixed", "datasets", "objective")}

    def digest(self) -> str:
        """Hash of `lasting`."""
        return hashlib.sha256(json.dumps(self.lasting(), sort_keys=True).encode()).hexdigest()[:16]

    @functools.cached_property
    def points(self) -> list[Point]:
        """Every distinct point, sorted by grid_key; with a recorded design (`design.blocks`), the points it runs,
        block by block (`designed`)."""
        points = expand(self._data)
        design = self._data.get("design")
        return designed(points, design) if design and design.get("blocks") else points

    @functools.cached_property
    def order(self) -> dict[str, int]:
        """Each point's place in `points`: new points start in this order (a design's blocks one after another)."""
        return {p.grid_key: i for i, p in enumerate(self.points)}

    def dataset_of(self, point: Point) -> str:
        """The name of the dataset `point` trains on (the space's only one when `dataset` is not an axis)."""
        return point.params.get("dataset") or next(iter(self._data["datasets"]))

    @property
    def axes(self) -> list[str]:
        """The axes of the space (the seed aside), sorted."""
        return sorted({name for axes in blocks(self._data) for name in axes})
