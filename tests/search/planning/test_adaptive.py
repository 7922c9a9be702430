"""A design that learns (`search.planning.adaptive`): each further block drawn by the configurations' chance of
being the best, averaged over the families a design is shared by. (The whole loop on the digits:
tests/search/space/test_design.py; its regret beside the other protocols: bench/design.py.)"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd

from analysis.effects import FamilyEffects, fit_families
from search.planning.adaptive import chosen_by_results, drawn_by_chance
from search.space.grid import config_key
from tests.analysis.test_effects import LEVELS, candidates, gains


def fitted(best_thresholds: dict[str, float]) -> dict[tuple, FamilyEffects]:
    """One family per entry, each with a 1 pp step towards its best threshold at σ = 0.3 (a clear best)."""
    rng = np.random.default_rng(5)
    frames = []
    for family, best in best_thresholds.items():
        frame = gains(candidates(), [0, 1], 0.3, rng)
        if best == 0.2:  # the threshold effect reversed
            frame["gain"] = -frame["gain"]
        frames.append(frame.assign(dataset="d", architecture=family))
    return fit_families(pd.concat(frames, ignore_index=True), list(LEVELS), candidates(), interactions=False)


CONFIGS = {config_key(c): c for c in candidates()}


def test_a_block_takes_the_likely_best_of_every_family_never_one_already_run_and_the_same_on_a_rerun():
    families = fitted({"a": 0.8, "b": 0.2})
    taken = {k for k, c in CONFIGS.items() if c["threshold"] == 0.8 and c["method"] == "a"}
    keys = drawn_by_chance(families, CONFIGS, taken, 12, np.random.default_rng(0))
    assert len(keys) == len(set(keys)) == 12 and not set(keys) & taken
    assert set(Counter(CONFIGS[k]["threshold"] for k in keys)) == {0.2, 0.8}  # each family's best, both
    assert keys == drawn_by_chance(families, CONFIGS, taken, 12, np.random.default_rng(0))


def test_past_the_configurations_some_draw_chose_the_block_takes_the_highest_upper_bounds():
    families = fitted({"a": 0.8})
    taken = {k for k, c in CONFIGS.items() if c["threshold"] == 0.8 and c["method"] == "a"}
    keys = drawn_by_chance(families, CONFIGS, taken, 12, np.random.default_rng(0))
    thresholds = [CONFIGS[k]["threshold"] for k in keys]
    assert thresholds == [0.8] * 6 + [0.6] * 6  # the best threshold's 6 left, then the next level's


def test_a_family_not_fitted_keeps_every_configuration_in_the_draw_and_nothing_is_left_to_draw_after_all_ran():
    families = {**fitted({"a": 0.8}), ("d", "c"): FamilyEffects(note="too few")}
    keys = drawn_by_chance(families, CONFIGS, set(), len(CONFIGS), np.random.default_rng(1))
    assert sorted(keys) == sorted(CONFIGS)
    assert drawn_by_chance(families, CONFIGS, set(CONFIGS), 5, np.random.default_rng(1)) == []


def test_a_fit_of_blocks_drawn_from_results_says_its_tests_are_exploratory():
    """Runs chosen from earlier results break the tests' assumption of blind runs (bench/design.py: a null axis named
    in up to 9 % of studies): the fit of such a design says so; a blind or a precision (balanced) design does not."""
    blocks = [{"seed": 0, "configs": ["0" * 16]}, {"seed": 1, "configs": ["1" * 16]}]
    assert "exploratory" in chosen_by_results({"size": 60, "step": 10, "blocks": blocks})
    assert chosen_by_results({"size": 60, "step": 10, "blocks": blocks[:1]}) is None  # the first block: blind
    assert chosen_by_results({"size": 60, "step": 60, "blocks": blocks}) is None  # balanced blocks (a precision)
    assert chosen_by_results({"size": 60, "blocks": blocks}) is None and chosen_by_results(None) is None
