"""The confirmation stage: from an exploration's ranking to a small study that can call its verdicts.

An exploration (any grid, with halving or not) selects on validation only, and its families hold thousands of
comparisons on a few seeds: corrected for that many, nothing can be called. `search confirm` takes the top K proxy
configurations per group (default: per dataset × architecture), ranked by the exploration's objective averaged over
the seeds of its complete trials, and builds a second study that runs each of them on fresh seeds (disjoint from the
exploration's: `seeds_from` past its last seed), at full budget and without halving, beside its matched references:
the exploration's baselines that share its settings, and its two matched controls (`control: random_location`, the
same pixels replaced elsewhere; `control: matched_duplicate`, the same images unmasked). Its families hold K
comparisons each, so corrections leave power; `minimum_detectable_effect` says how much.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from search.records import record
from search.space.grid import Configuration, GridSpec, block_values
from trainer.config import MATCHED_CONTROLS
from trainer.errors import ProxySearchError
from trainer.prefix import CAM_AXES, PointKind
from trainer.schedule import parse_schedule


class ConfirmError(ProxySearchError, ValueError):
    """The exploration cannot give a confirmation as asked; the message says why."""


def configurations(trials: list[FrozenTrial], spec: GridSpec) -> dict[str, dict[str, Any]]:
    """Each proxy configuration of the exploration (`Configuration.name`) -> {"settings": its params without the seed,
    "values": its objective per complete seed, "seeds"}."""
    out: dict[str, dict[str, Any]] = {}
    for t in trials:
        if t.state != TrialState.COMPLETE or record.kind_of(t) != PointKind.PROXY or t.value is None:
            continue
        configuration = Configuration.of(t.params)
        entry = out.setdefault(configuration.name, {"settings": configuration.params, "values": {}})
        entry["values"][record.seed_of(t)] = t.value
    return out


def select(
    trials: list[FrozenTrial], spec: GridSpec, top: int, per: tuple[str, ...]
) -> dict[tuple, list[dict[str, Any]]]:
    """The `top` configurations of each group of the `per` axes, best first by the objective's mean over seeds
    (ties broken by the settings, so the choice is reproducible)."""
    sign = -spec.objective.sign  # ascending: the best first
    groups: dict[tuple, list[tuple[float, str, dict]]] = {}
    fixed = spec.fixed
    for text, entry in configurations(trials, spec).items():
        settings = entry["settings"]
        group = tuple((axis, settings.get(axis, fixed.get(axis))) for axis in per)
        mean = statistics.fmean(entry["values"].values())
        groups.setdefault(group, []).append((sign * mean, text, {**settings, "_mean": mean}))
    if not groups:
        raise ConfirmError("the exploration has no complete proxy trial to rank: run it first")
    return {g: [c for _, _, c in sorted(rows)[:top]] for g, rows in sorted(groups.items(), key=lambda kv: str(kv[0]))}


def fresh_seed(own: range, taken: list[tuple[str, range]]) -> int:
    """The first seed no study of an exploration has used: past its `own` seeds and every confirmation's made from
    it (`search.records.record.taken_seeds`), so that no seed is spent twice."""
    return max([own.stop, *(seeds.stop for _, seeds in taken)])


def confirmation_space(
    spec: GridSpec,
    selected: dict[tuple, list[dict]],
    seeds: int,
    name: str,
    seeds_from: int,
    test_overlap: bool = False,
) -> dict:
    """The space of the confirmation: every selected configuration with its matched baselines and controls, on
    `seeds` fresh seeds from `seeds_from` (`fresh_seed`), no halving; `test_overlap` records that its test images
    may include images the exploration validated on (`search confirm --allow-test-overlap`)."""
    configs = [{k: v for k, v in c.items() if not k.startswith("_")} for chosen in selected.values() for c in chosen]
    blocks: list[dict[str, list]] = []
    for config in configs:
        blocks.append({axis: [value] for axis, value in config.items()})
        blocks += [{**{a: [v] for a, v in config.items()}, "control": [control]} for control in MATCHED_CONTROLS]
        blocks += _matched_baselines(spec, config)
    unique = []
    for block in blocks:  # two configurations share their baselines
        if block not in unique:
            unique.append(block)
    data = spec.to_data()
    return {
        "study": name,
        "objective": data["objective"],
        "repeats": seeds,
        "seeds_from": seeds_from,
        "max_attempts": data["max_attempts"],
        "resources": data["resources"],
        "datasets": data["datasets"],
        "fixed": data["fixed"],
        "grid": unique[0],
        "baselines": unique[1:],
        "confirms": spec.name,
        **({"test_overlap": True} if test_overlap else {}),
        **({"artifacts": data["artifacts"]} if data.get("artifacts") else {}),
    }


def _matched_baselines(spec: GridSpec, config: dict) -> list[dict[str, list]]:
    """The exploration's baselines (`baselines:` entries without proxy steps) at this configuration's settings."""
    shared = {a: [v] for a, v in config.items() if a not in CAM_AXES and a != "proxy_steps"}
    out = []
    for entry in spec.baselines:
        if any(parse_schedule(str(s)).steps for s in block_values(entry, spec.fixed, "proxy_steps")):
            continue  # a control entry: the confirmation has its matched ones
        block = {**shared, **{a: v for a, v in entry.items() if a not in shared}}
        for axis, values in entry.items():  # an entry's list for one of the config's axes: only the config's value
            if axis in shared and config[axis] in values:
                block[axis] = [config[axis]]
            elif axis in shared:
                block = {}
        if block:
            out.append(block)
    return out


def paired_spread(trials: list[FrozenTrial], spec: GridSpec, selected: dict[tuple, list[dict]]) -> dict[tuple, float]:
    """Per group, the spread to plan the confirmation's power from: the median over the selected configurations
    of their objective's standard deviation over seeds, times √2 (a paired difference of two independent arms);
    a configuration the exploration did not run, or ran on one seed, has none: then the effects model's residual
    spread of a paired gain stands in (`_spread`, when the selection came from the model). The objective is a
    validation metric: planning never reads the test set. Without either, NaN."""
    entries = configurations(trials, spec)
    out = {}
    for group, chosen in selected.items():
        spreads = []
        for config in chosen:
            values = entries.get(_configuration(config).name, {}).get("values", {})  # none: a model's pick
            if len(values) > 1:
                spreads.append(statistics.stdev(values.values()))
        fitted = [c["_spread"] for c in chosen if isinstance(c.get("_spread"), float) and c["_spread"] > 0]
        out[group] = (
            math.sqrt(2) * statistics.median(spreads) if spreads else statistics.median(fitted) if fitted else math.nan
        )
    return out


def combine(predicted: dict[tuple, list[dict]], observed: dict[tuple, list[dict]], top: int) -> dict[tuple, list[dict]]:
    """Per group, a model's best `top` - 1 configurations and then the best observed ones not among them, `top` in
    all: a hedge against an interaction the model does not carry (`search confirm --select both`)."""
    out = {}
    for group in sorted(set(predicted) | set(observed), key=str):
        chosen: dict[str, dict] = {}
        for config in [*predicted.get(group, [])[: top - 1], *observed.get(group, [])]:
            chosen.setdefault(_configuration(config).name, config)
        out[group] = list(chosen.values())[:top]
    return out


def _configuration(selected: dict[str, Any]) -> Configuration:
    """The configuration of a selected entry (its settings, less the `_mean`, `_spread`… the selection adds)."""
    return Configuration.of({k: v for k, v in selected.items() if not k.startswith("_")})
