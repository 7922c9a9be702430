"""Successive halving over a grid (pure decisions; the driver applies them).

At each rung (an epoch), within each group of points (those sharing the `within` axes; by default dataset and
architecture), the proxy-attention *configurations* are ranked by the objective at that epoch, averaged over their
seeds, and all but the best `keep` fraction are stopped on all their seeds together: Optuna PRUNED, with the rung
and the reason. Deciding seed by seed would keep a configuration only on the seeds where it happened to look good
and then compare those survivors with their baselines: a biased comparison (with no true effect, +1 to +2 points
and up to 40 % of families with a false "better" in the simulations of tests/search/test_confirm.py). Baselines
and controls always run to the end (every verdict needs them). A decision waits until every point of its group has
reached the rung (or left the group by failing), and depends only on the values at the rung: a driver killed and
run again makes the same decisions.
Points tied with the last one kept are kept too, so identical points share their fate. (Jamieson & Talwalkar,
"Non-stochastic Best Arm Identification and Hyperparameter Optimization", AISTATS 2016; Li et al., "Hyperband",
JMLR 18, 2018.)
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from search.grid import Point


@dataclass(frozen=True)
class Halving:
    """`halving:` of a space."""

    rungs: tuple[int, ...]
    keep: float
    keep_text: str
    within: tuple[str, ...]
    metric: str
    direction: str

    @classmethod
    def of(cls, config: dict | None, objective: tuple[str, str]) -> Halving | None:
        if not config:
            return None
        return cls(tuple(config["rungs"]), config["keep"], config["keep_text"], tuple(config["within"]), *objective)

    def group(self, point: Point) -> tuple:
        """The group a point is ranked in."""
        return tuple((axis, point.params.get(axis)) for axis in self.within)

    def value(self, history: list[dict], rung: int) -> float | None:
        """The objective at epoch `rung` from a trial's per-epoch rows (None before it got there)."""
        rows = [r for r in history if r["epoch"] <= rung]
        if not rows or rows[-1]["epoch"] != rung:
            return None
        if self.metric == "val_accuracy_best":
            return max(r["val_accuracy"] for r in rows)
        return rows[-1][self.metric]

    def next_rung(self, epochs_done: int, total: int) -> int | None:
        """Where a point that has done `epochs_done` of `total` epochs must stop next (None: run to the end)."""
        return next((r for r in self.rungs if epochs_done < r < total), None)


def decide(halving: Halving, rung: int, values: dict[str, float]) -> dict[str, str]:
    """Which of the group's points (grid_key -> objective at `rung`) are stopped, each with its reason."""
    if not values:
        return {}
    sign = -1.0 if halving.direction == "maximize" else 1.0
    ordered = sorted(values.items(), key=lambda kv: (sign * kv[1], kv[0]))
    kept = max(1, math.ceil(halving.keep * len(ordered)))
    cutoff = ordered[kept - 1][1]
    pruned = {}
    for rank, (key, value) in enumerate(ordered, start=1):
        if sign * value > sign * cutoff:
            pruned[key] = (
                f"stopped at epoch {rung}: {halving.metric} {value:.4f} ranks {rank} of {len(ordered)} in "
                f"its group; the best {halving.keep_text} go on (cutoff {cutoff:.4f})"
            )
    return pruned


def configuration(point: Point) -> str:
    """A point's configuration: its settings without the seed (what halving keeps or stops as a whole)."""
    return json.dumps({k: v for k, v in point.params.items() if k != "seed"}, sort_keys=True, default=str)


def decide_configurations(
    halving: Halving, rung: int, values: dict[str, float], configuration_of: dict[str, str]
) -> dict[str, str]:
    """`decide` on each configuration's mean over its seeds (grid_key -> value at `rung`; grid_key ->
    configuration); every seed of a stopped configuration is stopped, with the configuration's reason."""
    by_configuration: dict[str, list[float]] = {}
    for key, value in values.items():
        by_configuration.setdefault(configuration_of[key], []).append(value)
    means = {c: sum(v) / len(v) for c, v in by_configuration.items()}
    stopped = decide(halving, rung, means)
    seeds = {c: len(v) for c, v in by_configuration.items()}
    return {
        key: f"{stopped[c]} (mean over {seeds[c]} seeds)"
        for key, c in configuration_of.items()
        if key in values and c in stopped
    }
