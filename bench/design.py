"""Protocols of the thesis grid's shape at equal cost, on simulated gains with a known truth (prints JSON).

Each simulated study is one (dataset, architecture) of `spaces/thesis_grid.yaml`: its 900 proxy configurations.
The true gain over the matched baseline is a main effect of `threshold` (levels spread over 3 pp) and of
`multiply_weight` (1.5 pp), one two-way cell (+1 pp at one threshold × weight), the other axes nothing. A run
observes the truth plus seed noise (σ) minus its baseline's seed noise (σ, shared by the seed's runs). Cost is in
trials, baselines included (four per seed, as in the thesis grid), against the naive grid's 3,648 per family.

Protocols, each followed by the same confirmation (its top 3 on 5 fresh seeds beside matched baselines and the
two matched controls: 60 trials), which picks the best confirmed mean:
- design: one balanced block of 60 (`search.design.extend_design`), analysed by `results.effects.analyse_family`,
  the model's top 3 confirmed;
- random: 60 configurations drawn at random, same analysis;
- optuna-random / optuna-tpe: Optuna's RandomSampler / TPESampler over the grid's categorical space, 60 trials,
  their best 3 observed confirmed (the effects analysis applied to their trials for the naming figures);
- halving: 180 random configurations at 1/9 of the epochs, the best third at 1/3, the best third of those in full
  (noise σ/√fraction; 60 trials' cost), the best 3 confirmed;
- full: the whole grid on 3 seeds (2,712 trials), same analysis, the best 3 by mean confirmed.

    python bench/design.py            # the README's figures: 500 studies (~17 min on 2 cores)
    python bench/design.py --quick    # 10 studies, interactions not tested (tests/test_bench.py runs it)
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd
from common import emit

from results.effects import analyse_family
from search.design import configurations, design_factors, extend_design
from search.space import load_space

NAIVE_TRIALS = 3648  # per (dataset, architecture) in the thesis grid: 900 × 3 proxies, 312 × 3 controls, 12 baselines
BASELINES_PER_SEED = 4
EXPLORATION = 60
CONFIRM_TOP, CONFIRM_SEEDS = 3, 5
CONFIRM_TRIALS = CONFIRM_TOP * CONFIRM_SEEDS * 3 + CONFIRM_SEEDS * 3  # configs + 2 matched controls, 3 baselines
REAL_AXES = ("threshold", "multiply_weight")


class World:
    """One simulated family: its configurations, factors and the true gain of each (pp)."""

    def __init__(self, configs: dict[str, dict], rng: np.random.Generator) -> None:
        self.configs, self.keys = configs, list(configs)
        thresholds = sorted({c["threshold"] for c in configs.values()})
        weights = sorted({c["multiply_weight"] for c in configs.values()})
        t_effect = dict(zip(thresholds, rng.permutation(np.linspace(-1.5, 1.5, len(thresholds))), strict=True))
        w_effect = dict(zip(weights, rng.permutation(np.linspace(-0.75, 0.75, len(weights))), strict=True))
        cell = (rng.choice(thresholds), rng.choice(weights))
        self.truth = {
            k: t_effect[c["threshold"]]
            + w_effect[c["multiply_weight"]]
            + (1.0 if (c["threshold"], c["multiply_weight"]) == cell else 0.0)
            for k, c in configs.items()
        }
        self.best = max(self.truth.values())

    def observe(self, keys: list[str], seed_of: list[int], sigma: float, rng: np.random.Generator, noise=1.0):
        baseline = {s: rng.normal(0, sigma) for s in set(seed_of)}
        return [self.truth[k] + rng.normal(0, sigma * noise) - baseline[s] for k, s in zip(keys, seed_of, strict=True)]

    def confirm(self, picks: list[str], sigma: float, rng: np.random.Generator) -> float:
        """The true gain of the pick the confirmation keeps: the best mean over fresh seeds, paired by seed."""
        seeds = range(CONFIRM_SEEDS)
        baseline = {s: rng.normal(0, sigma) for s in seeds}
        means = {k: statistics.fmean(self.truth[k] + rng.normal(0, sigma) - baseline[s] for s in seeds) for k in picks}
        return self.truth[max(means, key=means.__getitem__)]


def analyse(world: World, factors: list[str], keys: list[str], seeds: list[int], gains: list[float], quick: bool):
    frame = pd.DataFrame([world.configs[k] for k in keys])
    frame["config"], frame["seed"], frame["gain"] = keys, seeds, gains
    return analyse_family(frame, factors, list(world.configs.values()), CONFIRM_TOP, interactions=not quick)


def named(effects) -> set[str]:
    return set(effects.axes.loc[effects.axes["named"], "factor"]) if len(effects.axes) else set()


def by_key(world: World, settings: list[dict]) -> list[str]:
    index = {json.dumps(c, sort_keys=True): k for k, c in world.configs.items()}
    return [index[json.dumps(s, sort_keys=True)] for s in settings]


def top_observed(keys: list[str], gains: list[float]) -> list[str]:
    means = pd.Series(gains, index=keys).groupby(level=0).mean().sort_values(ascending=False)
    return list(means.index[:CONFIRM_TOP])


def run_study(study: int, sigma: float, configs: dict, fixed: dict, factors: list[str], quick: bool, full: bool):
    import optuna

    rng = np.random.default_rng([study, int(sigma * 100)])
    world = World(configs, rng)
    out = {}
    design = extend_design(configs, fixed, None, 1, study, range(3))
    chosen = design["blocks"][0]["configs"]
    protocols = {"design": chosen, "random": list(rng.choice(world.keys, len(chosen), replace=False))}
    for name, keys in protocols.items():
        gains = world.observe(keys, [0] * len(keys), sigma, rng)
        effects = analyse(world, factors, keys, [0] * len(keys), gains, quick)
        predicted = by_key(world, [b["settings"] for b in effects.best])
        picks = predicted or top_observed(keys, gains)
        out[name] = (named(effects), world.best - world.confirm(picks, sigma, rng), len(keys) + BASELINES_PER_SEED)
        if name == "design":  # the model's best two and the best seen (`search confirm --select both`)
            both = list(dict.fromkeys([*predicted[: CONFIRM_TOP - 1], *top_observed(keys, gains)]))[:CONFIRM_TOP]
            out["design-both"] = (named(effects), world.best - world.confirm(both, sigma, rng), out[name][2])
    levels = {f: sorted({json.dumps(c[f]) for c in configs.values() if f in c}) for f in factors}
    index = {json.dumps(c, sort_keys=True): k for k, c in configs.items()}
    for name, sampler in (
        ("optuna-random", optuna.samplers.RandomSampler(seed=study)),
        ("optuna-tpe", optuna.samplers.TPESampler(seed=study)),
    ):
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        tuned = optuna.create_study(direction="maximize", sampler=sampler)
        keys: list[str] = []
        baseline = rng.normal(0, sigma)
        for _ in range(EXPLORATION):
            trial = tuned.ask()
            settings = {f: json.loads(trial.suggest_categorical(f, levels[f])) for f in factors}
            key = index.get(json.dumps(settings, sort_keys=True))
            if key is None:  # a combination the grid merges (clear_every_step under one proxy step)
                settings.pop("clear_every_step", None)
                key = index[json.dumps(settings, sort_keys=True)]
            gain = world.truth[key] + rng.normal(0, sigma) - baseline
            tuned.tell(trial, gain)
            keys.append(key)
        gains = [t.value for t in tuned.trials]
        effects = analyse(world, factors, keys, [0] * len(keys), gains, quick)
        regret = world.best - world.confirm(top_observed(keys, gains), sigma, rng)
        out[name] = (named(effects), regret, EXPLORATION + BASELINES_PER_SEED)
    # Successive halving: rungs at 1/9, 1/3, 1 of the epochs, keeping a third; less training reads noisier.
    keys = list(rng.choice(world.keys, 3 * EXPLORATION, replace=False))
    for fraction in (1 / 9, 1 / 3, 1.0):
        gains = world.observe(keys, [0] * len(keys), sigma, rng, noise=1 / math.sqrt(fraction))
        if fraction < 1:
            keys = list(pd.Series(gains, index=keys).nlargest(len(keys) // 3).index)
    out["halving"] = (set(), world.best - world.confirm(top_observed(keys, gains), sigma, rng), 64)
    if full:
        keys = [k for k in world.keys for _ in range(3)]
        seeds = [s for _ in world.keys for s in range(3)]
        gains = world.observe(keys, seeds, sigma, rng)
        effects = analyse(world, factors, keys, seeds, gains, True)
        out["full"] = (named(effects), world.best - world.confirm(top_observed(keys, gains), sigma, rng), 2712)
    return out


def summarise(results: list[dict], factors: list[str]) -> dict:
    table = {}
    for name in results[0]:
        rows = [r[name] for r in results]
        cost = rows[0][2] + CONFIRM_TRIALS
        analysed = name != "halving"
        table[name] = {
            "studies": len(rows),
            "both_real_axes_named": statistics.fmean(set(REAL_AXES) <= r[0] for r in rows) if analysed else None,
            "null_axis_named": statistics.fmean(
                len(r[0] - set(REAL_AXES)) / (len(factors) - len(REAL_AXES)) for r in rows
            )
            if analysed
            else None,
            "median_regret_pp": statistics.median(r[1] for r in rows),
            "mean_regret_pp": statistics.fmean(r[1] for r in rows),
            "exploration_share": rows[0][2] / NAIVE_TRIALS,
            "total_share_with_confirmation": cost / NAIVE_TRIALS,
        }
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--studies", type=int, default=500)
    parser.add_argument("--full-studies", type=int, default=20, help="studies that also run the full grid")
    parser.add_argument("--quick", action="store_true", help="10 studies (1 with the full grid), no interaction tests")
    args = parser.parse_args()
    if args.quick:
        args.studies, args.full_studies = min(args.studies, 10), min(args.full_studies, 1)
    spec = load_space(Path(__file__).resolve().parent.parent / "spaces/thesis_grid.yaml", check_roots=False)
    family = [p for p in spec.points if p.params["dataset"] == "cifar100" and p.params["architecture"] == "resnet18"]
    configs = configurations(family)
    factors = [f.name for f in design_factors(configs)]
    start, report = time.time(), {}
    for sigma in (0.5, 2.0):
        results = [
            run_study(s, sigma, configs, spec.data["fixed"], factors, args.quick, s < args.full_studies)
            for s in range(args.studies)
        ]
        report[f"sigma_{sigma}"] = summarise([{k: v for k, v in r.items() if k != "full"} for r in results], factors)
        fulls = [{"full": r["full"]} for r in results if "full" in r]
        if fulls:
            report[f"sigma_{sigma}"]["full"] = summarise(fulls, factors)["full"]
    report["seconds"] = round(time.time() - start, 1)
    emit(report)


if __name__ == "__main__":
    main()
