"""Protocols of the thesis grid's shape at equal cost, under several known truths (prints JSON).

Each simulated study is one (dataset, architecture) of `spaces/thesis_grid.yaml`: its 900 proxy configurations,
and its references as the thesis has them — per seed, four baseline trials, of which each configuration is paired
with its budget-matched one (39 epochs for the one-step schedule, 36 for the multi-step one), each a trial as noisy
as a proxy trial. A run observes its configuration's true gain plus its own noise minus that baseline trial's
noise (shared by every configuration of its schedule on that seed), σ = 1 pp. The truths:

- additive: `threshold` (levels spread over 3 pp) and `multiply_weight` (1.5 pp) main effects;
- grouped: the same gain, but only under one `cam_method` (the others gain nothing);
- crossover: the `threshold` effect's sign flips between two `cam_method`s (none under the third), plus the
  `multiply_weight` effect: `threshold`'s main effect is zero, its interaction is not;
- heavy: the additive truth with Student-t(3) noise of the same sd.

Protocols, each spending the same exploration (about 128 trials: 120 proxy trials and the baselines of the seeds
they use) and each followed by the same confirmation (its top 3 on 5 fresh seeds beside their budget-matched
baselines; the best confirmed mean is kept):
- design: two blind balanced blocks of 60 (`search.space.design.extend_design`), the effects model's top 3
  (`analysis.effects`, the fit the report prints);
- learning: one balanced block of 60, then blocks of 10 drawn by each configuration's chance of being the best
  under the fit (`search.planning.adaptive.drawn_by_chance`, as `search run --adapt` draws them) on the two seeds
  the blind design uses, until the 120 proxy trials are spent; the model's top 3;
- random: 120 configurations at random on two seeds, the same analysis;
- optuna-tpe: Optuna's TPESampler over the grid's categorical space, 124 trials on one seed, its best 3 seen;
- halving: 372 random configurations at 1/9 of the epochs, the best third at 1/3, the best third of those in
  full (noise σ/√fraction), its best 3.

Per truth: each protocol's mean regret (the best configuration's true gain minus the kept one's, pp) with its 95 %
interval, its difference from `learning` paired by study with its interval, the share of studies naming every real
axis (as a main effect or in a named interaction), and the share naming some null axis (an axis the truth does not
involve: per study, at Holm's 5 %).

    python bench/design.py            # the README's figures: 300 studies per truth (~25 min on 2 cores)
    python bench/design.py --quick    # 2 studies per truth (tests/test_bench.py runs it)
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd
from common import emit

from analysis.effects import analyse_family, name_study_wide
from search.planning.adaptive import drawn_by_chance
from search.planning.budget import learning as learning_record
from search.space.design import block_rng, configurations, design_factors, extend_design
from search.space.parse import load_space

SIGMA = 1.0
BASELINES_PER_SEED = 4  # the thesis grid's: 40 epochs (none, flip) and the budget-matched 39 and 36
PROXY_TRIALS = 120  # the exploration: two blocks of the thesis' 60
CONFIRM_TOP, CONFIRM_SEEDS = 3, 5
TRUTHS = ("additive", "grouped", "crossover", "heavy")
REAL = {  # the columns of the effects model each truth involves; the others are null
    "additive": {"threshold", "multiply_weight"},
    "grouped": {"cam_method", "threshold", "multiply_weight"},
    "crossover": {"cam_method", "threshold", "multiply_weight"},
    "heavy": {"threshold", "multiply_weight"},
}
SCHEDULE = "proxy_steps"


class World:
    """One simulated family under `truth`: the true gain of each configuration (pp), and its observation."""

    def __init__(self, configs: dict[str, dict], truth: str, rng: np.random.Generator) -> None:
        self.configs, self.keys, self.kind, self.rng = configs, list(configs), truth, rng
        level = {
            a: sorted({str(c[a]) for c in configs.values()}) for a in ("threshold", "multiply_weight", "cam_method")
        }
        t = dict(zip(level["threshold"], rng.permutation(np.linspace(-1.5, 1.5, 5)), strict=True))
        w = dict(zip(level["multiply_weight"], rng.permutation(np.linspace(-0.75, 0.75, 5)), strict=True))
        sign = dict(zip(level["cam_method"], rng.permutation([1.0, -1.0, 0.0]), strict=True))
        chosen = level["cam_method"][int(rng.integers(3))]

        def gain(c: dict) -> float:
            threshold, weight, cam = t[str(c["threshold"])], w[str(c["multiply_weight"])], str(c["cam_method"])
            if truth == "grouped":
                return (threshold + weight) if cam == chosen else 0.0
            if truth == "crossover":
                return sign[cam] * threshold + weight
            return threshold + weight

        self.truth = {k: gain(c) for k, c in configs.items()}
        self.best = max(self.truth.values())
        self.baselines: dict[tuple, float] = {}

    def noise(self, size: int | None = None, scale: float = 1.0):
        if self.kind == "heavy":  # Student-t(3) has variance 3: scaled to σ
            return self.rng.standard_t(3, size) * SIGMA * scale / math.sqrt(3)
        return self.rng.normal(0, SIGMA * scale, size)

    def reference(self, seed: int, key: str) -> tuple[str, float]:
        """The budget-matched baseline trial of `key`'s schedule on `seed`: its name and its noise (drawn once)."""
        name = f"{self.configs[key][SCHEDULE]}@{seed}"
        if name not in self.baselines:
            self.baselines[name] = float(self.noise())
        return name, self.baselines[name]

    def observe(self, keys: list[str], seeds: list[int], scale: float = 1.0) -> pd.DataFrame:
        """The paired gains of `keys` run on `seeds`, as `analysis.gains.paired_gains` makes them."""
        rows = []
        for key, seed in zip(keys, seeds, strict=True):
            name, baseline = self.reference(seed, key)
            gain = self.truth[key] + float(self.noise(scale=scale)) - baseline
            rows.append({**self.configs[key], "config": key, "seed": seed, "gain": gain, "baselines": (name,)})
        return pd.DataFrame(rows)

    def confirm(self, picks: list[str]) -> float:
        """The regret of what the confirmation keeps: the best mean paired gain over fresh seeds."""
        fresh = range(100, 100 + CONFIRM_SEEDS)
        means = {k: self.observe([k] * CONFIRM_SEEDS, list(fresh))["gain"].mean() for k in picks}
        return self.best - self.truth[max(means, key=means.__getitem__)]


def fit(world: World, factors: list[str], gains: pd.DataFrame):
    """The report's fit: main effects, the two-way interactions the runs carry (the named ones kept for the
    prediction), the predicted best."""
    effects = analyse_family(gains, factors, list(world.configs.values()), CONFIRM_TOP)
    name_study_wide({("d", "a"): effects})  # a study of one family: its axes and pairs in one Holm, as the report
    return effects


def picks_of(world: World, effects, gains: pd.DataFrame) -> list[str]:
    """The model's top configurations, else (nothing fitted) the best seen."""
    index = {json.dumps(c, sort_keys=True): k for k, c in world.configs.items()}
    predicted = [index[json.dumps(b["settings"], sort_keys=True)] for b in effects.best]
    return predicted or best_seen(gains)


def best_seen(gains: pd.DataFrame) -> list[str]:
    return list(gains.groupby("config")["gain"].mean().nlargest(CONFIRM_TOP).index)


def named(effects) -> set[str]:
    """The axes a fit names: as a main effect, or in a named interaction."""
    axes = set(effects.axes.loc[effects.axes["named"], "factor"]) if len(effects.axes) else set()
    pairs = effects.interactions
    if len(pairs):
        for row in pairs[pairs["named"].astype(bool)].itertuples():
            axes |= {row.a, row.b}
    return axes


def cost(gains: pd.DataFrame) -> int:
    return len(gains) + BASELINES_PER_SEED * gains["seed"].nunique()


def blind(world: World, factors: list[str], fixed: dict, seed: int):
    design = extend_design(world.configs, fixed, None, PROXY_TRIALS // 60, seed, range(3))
    keys = [k for b in design["blocks"] for k in b["configs"]]
    seeds = [b["seed"] for b in design["blocks"] for _ in b["configs"]]
    gains = world.observe(keys, seeds)
    effects = fit(world, factors, gains)
    return effects, gains


def learning(world: World, factors: list[str], fixed: dict, seed: int):
    """`search.planning.adaptive`'s loop: the balanced first block of the blind design the budget buys, a fit, the
    next block drawn by chance of being the best, while the proxy trials last."""
    blind = extend_design(world.configs, fixed, None, PROXY_TRIALS // 60, seed, range(3))
    design = learning_record({**blind, "budget": f"{PROXY_TRIALS}configs"}, 0, None, SIGMA, world.configs)
    first = design["blocks"][0]
    gains = world.observe(first["configs"], [first["seed"]] * len(first["configs"]))
    for block in range(1, design["planned"]):
        effects = fit(world, factors, gains)
        taken = set(gains["config"])
        keys = drawn_by_chance({("d", "a"): effects}, world.configs, taken, design["step"], block_rng(seed, block))
        on = design["seeds"][block % len(design["seeds"])]
        gains = pd.concat([gains, world.observe(keys, [on] * len(keys))], ignore_index=True)
    return fit(world, factors, gains), gains


def tpe(world: World, factors: list[str], study: int):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    levels = {f: sorted({json.dumps(c[f]) for c in world.configs.values() if f in c}) for f in factors}
    index = {json.dumps(c, sort_keys=True): k for k, c in world.configs.items()}
    tuned = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=study))
    keys, values = [], []
    for _ in range(PROXY_TRIALS + BASELINES_PER_SEED):  # one seed: the baselines of one, the rest as trials
        trial = tuned.ask()
        settings = {f: json.loads(trial.suggest_categorical(f, levels[f])) for f in factors}
        key = index.get(json.dumps(settings, sort_keys=True))
        if key is None:  # a combination the grid merges (clear_every_step under one proxy step)
            settings.pop("clear_every_step", None)
            key = index[json.dumps(settings, sort_keys=True)]
        values.append(float(world.observe([key], [0])["gain"].iloc[0]))
        tuned.tell(trial, values[-1])
        keys.append(key)
    return pd.DataFrame({"config": keys, "seed": 0, "gain": values})


def halving(world: World) -> pd.DataFrame:
    keys = list(world.rng.choice(world.keys, 3 * (PROXY_TRIALS + BASELINES_PER_SEED), replace=False))
    for fraction in (1 / 9, 1 / 3, 1.0):
        gains = world.observe(keys, [0] * len(keys), scale=1 / math.sqrt(fraction))
        if fraction < 1:
            keys = list(gains.groupby("config")["gain"].mean().nlargest(len(keys) // 3).index)
    return gains


def run_study(args: tuple) -> dict:
    """Every protocol on one world: (named axes, regret, cost) each."""
    study, truth, configs, fixed, factors = args
    out = {}
    for name in ("design", "learning", "random", "optuna-tpe", "halving"):
        world = World(configs, truth, np.random.default_rng([study, TRUTHS.index(truth)]))  # the same world each
        world.rng = np.random.default_rng([study, TRUTHS.index(truth), len(out)])  # its own noise
        if name in ("design", "learning"):
            effects, gains = (blind if name == "design" else learning)(world, factors, fixed, study)
            out[name] = (named(effects), world.confirm(picks_of(world, effects, gains)), cost(gains))
        elif name == "random":
            keys = list(world.rng.choice(world.keys, PROXY_TRIALS, replace=False))
            gains = world.observe(keys, [i % 2 for i in range(PROXY_TRIALS)])
            effects = fit(world, factors, gains)
            out[name] = (named(effects), world.confirm(picks_of(world, effects, gains)), cost(gains))
        else:
            gains = tpe(world, factors, study) if name == "optuna-tpe" else halving(world)
            spent = PROXY_TRIALS + 2 * BASELINES_PER_SEED  # one seed's baselines, the rest as trials
            out[name] = (None, world.confirm(best_seen(gains)), spent)
    return out


def interval(values: list[float]) -> list[float]:
    mean = statistics.fmean(values)
    half = 1.96 * statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else math.nan
    return [round(mean, 3), round(mean - half, 3), round(mean + half, 3)]


def summarise(results: list[dict], truth: str) -> dict:
    table = {}
    columns = {"cam_method", "multiply_weight", "proxy_steps × clear_every_step", "threshold", "wrong_subset"}
    for name in results[0]:
        rows = [r[name] for r in results]
        entry = {
            "studies": len(rows),
            "mean_regret_pp": interval([r[1] for r in rows]),
            "minus_learning_pp": interval([r[1] - s["learning"][1] for r, s in zip(rows, results, strict=True)]),
            "trials": statistics.fmean(r[2] for r in rows),
        }
        if rows[0][0] is not None:
            entry["every_real_axis_named"] = statistics.fmean(REAL[truth] <= r[0] for r in rows)
            entry["some_null_axis_named"] = statistics.fmean(bool(r[0] & (columns - REAL[truth])) for r in rows)
        table[name] = entry
    return table


def thesis_family() -> tuple[dict[str, dict], dict, list[str]]:
    """One (dataset, architecture) of the thesis grid: its proxy configurations, fixed settings, design factors."""
    spec = load_space(Path(__file__).resolve().parent.parent / "spaces/thesis_grid.yaml", check_roots=False)
    family = [p for p in spec.points if p.params["dataset"] == "cifar100" and p.params["architecture"] == "resnet18"]
    configs = configurations(family)
    return configs, spec.fixed, [f.name for f in design_factors(configs)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--studies", type=int, default=300)
    parser.add_argument("--quick", action="store_true", help="2 studies per truth")
    args = parser.parse_args()
    studies = min(args.studies, 2) if args.quick else args.studies
    configs, fixed, factors = thesis_family()
    start, report = time.time(), {}
    with multiprocessing.Pool(2) as pool:
        for truth in TRUTHS:
            jobs = [(s, truth, configs, fixed, factors) for s in range(studies)]
            report[truth] = summarise(pool.map(run_study, jobs), truth)
    report["sigma_pp"], report["seconds"] = SIGMA, round(time.time() - start, 1)
    emit(report)


if __name__ == "__main__":
    main()
