"""Error control of the study's claims, simulated through the project's own selection and verdict functions.

    python bench/verdicts.py           # 500 simulated studies per case
    python bench/verdicts.py --quick   # 40

Each study: 5 architectures × 27 proxy configurations explored on 3 seeds (validation and test accuracy per trial
correlated as measured on real trials, 0.57, and as first assumed, 0.8; each arm's own noise per seed 1 or 2 pp on
top of a seed effect shared by every arm, 1.5 pp); `search.planning.confirm.select` keeps the top 5 per
architecture by mean validation accuracy; each is confirmed on 10 fresh seeds beside its baseline and its two
matched controls. The confirmation's paired comparisons go through `results.tables._correct` (one Holm family per
dataset, architecture and kind of reference: the verdicts before the combined claim) and `results.claims.claims`
(one claim per configuration, "better than its baseline and both controls", Holm over the study). Prints one JSON
object: per case, the share of studies with a false "better" against some baseline, in any family, and with a false
claim; and, with a true +2 pp gain on 2 configurations per architecture over baseline and controls, how often a true
one is claimed.
"""

from __future__ import annotations

import argparse
import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
from common import emit
from optuna.trial import TrialState

from analysis import stats
from results.claims import CLAIM, claims
from results.tables import _correct
from search.planning.confirm import select
from search.space.grid import GridSpec

ARCHITECTURES, CONFIGS, TOP, EXPLORE_SEEDS, CONFIRM_SEEDS = 5, 27, 5, 3, 10
SEED_SD = 0.015  # a seed's shared effect on every arm (accuracy units); each arm's own noise is a case's `noise`
SPEC = GridSpec.from_data("sim", {"objective": {"metric": "val_accuracy", "direction": "maximize"}, "fixed": {}})


def explore(rng: np.random.Generator, gains: np.ndarray, correlation: float, noise: float) -> list[SimpleNamespace]:
    """The exploration's trials as `select` reads them: validation accuracy correlated with test accuracy."""
    trials = []
    for arch in range(ARCHITECTURES):
        for config in range(CONFIGS):
            for seed in range(EXPLORE_SEEDS):
                test_noise, own = rng.normal(0, noise, 2)
                val = 0.8 + gains[arch, config] + correlation * test_noise + math.sqrt(1 - correlation**2) * own
                trials.append(
                    SimpleNamespace(
                        state=TrialState.COMPLETE,
                        value=val,
                        user_attrs={"kind": "proxy", "seed": seed},
                        params={"architecture": f"a{arch}", "config": config},
                    )
                )
    return trials


def confirm(rng: np.random.Generator, gains: np.ndarray, chosen: dict, noise: float) -> pd.DataFrame:
    """The confirmation's paired comparisons, as `results.tables.paired_comparisons` lays them out."""
    rows = []
    for group, configs in chosen.items():
        arch = int(dict(group)["architecture"][1:])
        seed_effect = rng.normal(0, SEED_SD, CONFIRM_SEEDS)
        baseline = seed_effect + rng.normal(0, noise, CONFIRM_SEEDS)
        for config in configs:
            gain = gains[arch, config["config"]]
            mine = seed_effect + gain + rng.normal(0, noise, CONFIRM_SEEDS)
            references = {"baseline": baseline}
            for control in ("random_location", "matched_duplicate"):
                references[f"control ({control})"] = seed_effect + rng.normal(0, noise, CONFIRM_SEEDS)
            for kind, reference in references.items():
                comparison = stats.paired(mine - reference)
                rows.append(
                    {
                        "dataset": "d",
                        "architecture": f"a{arch}",
                        "configuration": f"a{arch}-c{config['config']}",
                        "reference_kind": kind,
                        "n": comparison.n,
                        "mean_diff": comparison.mean_diff,
                        "sd_diff": comparison.sd,
                        "t_p": comparison.t_p,
                        "truth": gain,
                        "_comparison": comparison,
                    }
                )
    return pd.DataFrame(rows)


def study(rng: np.random.Generator, gains: np.ndarray, correlation: float, noise: float) -> dict[str, bool]:
    chosen = select(explore(rng, gains, correlation, noise), SPEC, TOP, ("architecture",))  # type: ignore[arg-type]
    table = confirm(rng, gains, chosen, noise)
    per_family = _correct(table, "holm", stats.ALPHA)
    false_better = (per_family["verdict"] == "better") & (per_family["truth"] <= 0)
    claimed = claims(table, "holm")
    truth = table.groupby("configuration")["truth"].first()
    shown = claimed[claimed["verdict"] == CLAIM]["configuration"]
    return {
        "false_better_baseline": bool((false_better & (per_family["reference_kind"] == "baseline")).any()),
        "false_better_any_family": bool(false_better.any()),
        "false_claim": bool((truth[shown] <= 0).any()),
        "true_claim": bool((truth[shown] > 0).any()),
    }


def run(studies: int, correlation: float, effect: float, noise: float = 0.01) -> dict[str, float]:
    """`studies` simulated studies; `noise`: each arm's own per-seed spread (accuracy units)."""
    rng = np.random.default_rng(20261202)
    gains = np.zeros((ARCHITECTURES, CONFIGS))
    gains[:, :2] = effect
    outcomes = pd.DataFrame([study(rng, gains, correlation, noise) for _ in range(studies)])
    return {key: round(float(outcomes[key].mean()), 4) for key in outcomes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    studies = 8 if args.quick else 500
    cases = {
        f"correlation {r}, {'null' if e == 0 else f'+{e * 100:g} pp'}, arm noise {n * 100:g} pp": run(studies, r, e, n)
        for r, e, n in ((0.57, 0.0, 0.01), (0.57, 0.02, 0.01), (0.57, 0.02, 0.02), (0.8, 0.0, 0.01))
    }
    emit({"studies": studies, "cases": cases, "design": f"{ARCHITECTURES} architectures × top {TOP}"})


if __name__ == "__main__":
    main()
