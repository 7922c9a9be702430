"""The effects analysis of a design: known effects recovered with intervals, null axes not named, the predicted
best found among configurations never run, interactions tested where the runs carry them. (The protocol benchmark,
bench/design.py, runs in its quick form in tests/test_bench.py.)"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd

from results.effects import analyse_family

ROOT = Path(__file__).resolve().parents[2]
LEVELS = {"threshold": [0.2, 0.4, 0.6, 0.8], "weight": [0.2, 0.5, 0.8], "method": ["a", "b", "c"]}
TRUE = {"threshold": dict(zip(LEVELS["threshold"], [-1.5, -0.5, 0.5, 1.5], strict=True))}


def candidates() -> list[dict]:
    return [dict(zip(LEVELS, values, strict=True)) for values in itertools.product(*LEVELS.values())]


def gains(configs: list[dict], seeds: list[int], sigma: float, rng, cell: float = 0.0) -> pd.DataFrame:
    rows = []
    for config, seed in itertools.product(configs, seeds):
        truth = TRUE["threshold"][config["threshold"]] + (
            cell if (config["threshold"], config["weight"]) == (0.2, 0.8) else 0
        )
        key = json.dumps(config, sort_keys=True)
        rows.append({**config, "config": key, "seed": seed, "gain": truth + rng.normal(0, sigma)})
    return pd.DataFrame(rows)


def test_a_real_axis_is_named_with_intervals_that_hold_its_effects_and_null_axes_are_not():
    rng = np.random.default_rng(0)
    effects = analyse_family(gains(candidates(), [0, 1], 0.5, rng), list(LEVELS), candidates())
    named = dict(zip(effects.axes["factor"], effects.axes["named"], strict=True))
    assert named == {"threshold": True, "weight": False, "method": False}
    assert effects.best[0]["settings"]["threshold"] == 0.8
    assert effects.axes.set_index("factor").loc["threshold", "share"] > 0.5


def test_the_level_intervals_cover_the_true_effects_95_percent_of_the_time():
    rng = np.random.default_rng(4)
    covered = []
    for _ in range(100):
        effects = analyse_family(gains(candidates(), [0], 1.0, rng), list(LEVELS), candidates(), interactions=False)
        for row in effects.levels.itertuples():
            truth = TRUE["threshold"][float(row.level)] if row.factor == "threshold" else 0.0
            covered.append(row.low_pp <= truth <= row.high_pp)
    assert 0.92 <= np.mean(covered) <= 0.98


def test_the_predicted_best_may_be_a_configuration_that_never_ran():
    rng = np.random.default_rng(1)
    ran = [c for c in candidates() if not (c["threshold"] == 0.8 and c["weight"] == 0.5 and c["method"] == "a")]
    effects = analyse_family(gains(ran[::2], [0], 0.3, rng), list(LEVELS), candidates(), top=36)
    assert {json.dumps(b["settings"], sort_keys=True) for b in effects.best} >= {
        json.dumps({"threshold": 0.8, "weight": 0.5, "method": "a"}, sort_keys=True)
    }
    assert all(b["low_pp"] <= b["predicted_pp"] <= b["high_pp"] for b in effects.best)


def test_an_interaction_the_runs_carry_is_tested_and_found():
    rng = np.random.default_rng(2)
    effects = analyse_family(gains(candidates(), [0, 1], 0.3, rng, cell=5.0), list(LEVELS), candidates())
    found = effects.interactions.set_index(["a", "b"])
    assert found.loc[("threshold", "weight"), "named"] and not found.loc[("weight", "method"), "named"]
    assert effects.best[0]["settings"]["threshold"] == 0.2 and effects.best[0]["settings"]["weight"] == 0.8


def test_too_few_runs_say_so_instead_of_fitting():
    rng = np.random.default_rng(3)
    effects = analyse_family(gains(candidates()[:5], [0], 0.5, rng), list(LEVELS), candidates())
    assert "too few" in effects.note and effects.best == []
