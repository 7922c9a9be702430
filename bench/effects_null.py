"""How often the effects analysis names an axis when nothing is real, over whole studies of the thesis grid's shape
(prints JSON).

A study is 15 families (5 architectures × 3 datasets), each one designed block's worth of configurations on one seed:
4 thresholds × 3 weights × 3 CAM methods × 2 schedules (72), every gain over its schedule's budget-matched baseline
(one trial per seed each, as noisy as a proxy trial), no true effect anywhere. `analysis.effects` names an axis under
Holm over every axis of the study (`name_study_wide`); the figure beside it is what Holm within each family alone
named (what the report did before). Also each family's `proxy_steps` level intervals' coverage.

    python bench/effects_null.py            # 300 studies (4,500 fits; ~8 min on 2 cores)
    python bench/effects_null.py --quick    # 10 studies (tests/test_bench.py runs it)
"""

from __future__ import annotations

import argparse
import itertools
import math
import time

import numpy as np
import pandas as pd
from common import emit

from analysis import stats
from analysis.effects import analyse_family, name_study_wide

LEVELS = {
    "threshold": [0.2, 0.4, 0.6, 0.8],
    "weight": [0.2, 0.5, 0.8],
    "method": ["a", "b", "c"],
    "steps": ["one", "many"],
}
CONFIGS = [dict(zip(LEVELS, values, strict=True)) for values in itertools.product(*LEVELS.values())]
FAMILIES = 15


def family(rng: np.random.Generator) -> pd.DataFrame:
    baseline = {s: rng.normal(0, 1) for s in LEVELS["steps"]}
    return pd.DataFrame(
        {
            **c,
            "config": str(i),
            "seed": 0,
            "gain": rng.normal(0, 1) - baseline[c["steps"]],
            "baselines": (f"{c['steps']}@0",),
        }
        for i, c in enumerate(CONFIGS)
    )


def rate(hits: list[bool]) -> dict:
    p = float(np.mean(hits))
    half = 1.96 * math.sqrt(p * (1 - p) / len(hits))
    return {"rate": round(p, 4), "ci95": [round(max(0.0, p - half), 4), round(min(1.0, p + half), 4)]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--studies", type=int, default=300)
    args = parser.parse_args()
    studies = 10 if args.quick else args.studies
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    study_wide, per_family, covered = [], [], []
    for _ in range(studies):
        fitted = {
            (str(f), "arch"): analyse_family(family(rng), list(LEVELS), CONFIGS, interactions=False)
            for f in range(FAMILIES)
        }
        per_family.append(
            any((np.asarray(stats.adjust(f.axes["p"].tolist(), "holm")) < stats.ALPHA).any() for f in fitted.values())
        )
        name_study_wide(fitted)
        study_wide.append(any(f.axes["named"].any() for f in fitted.values()))
        for f in fitted.values():
            steps = f.levels[f.levels["factor"] == "steps"]
            covered += ((steps["low_pp"] <= 0) & (steps["high_pp"] >= 0)).tolist()
    emit(
        {
            "studies": studies,
            "families_per_study": FAMILIES,
            "some_axis_named_study_wide_holm": rate(study_wide),
            "some_axis_named_holm_per_family": rate(per_family),
            "proxy_steps_level_coverage": rate(covered),
            "seconds": round(time.perf_counter() - started, 1),
        }
    )


if __name__ == "__main__":
    main()
