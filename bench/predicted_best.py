"""Does the predicted best's interval hold after the maximum was taken, on the thesis grid's shape? (prints JSON)

Each simulated study is one (dataset, architecture) of `spaces/thesis_grid.yaml` (900 configurations) under the
additive truth of `bench/design.py` (so the model is right and only the selection can bias it), with the thesis'
two budget-matched baselines as noisy trials, σ = 1 pp. The design runs 1 block (60 configurations on one seed) or
4 blocks (240 on seeds 0, 1, 2, 0); the report's fit (`analysis.effects.analyse_family`, interactions tested) picks
its predicted best among all 900. Figures: how often the predicted best's interval (a max-t band over every
prediction) covers that configuration's true gain, the mean bias (predicted − true, pp), and how often its
`p_best` configuration is truly among the best.

    python bench/predicted_best.py            # 200 studies per design (~6 min on 2 cores)
    python bench/predicted_best.py --quick    # 4 per design (tests/test_bench.py runs it)
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import statistics
import time

import numpy as np
from common import emit
from design import World, fit, thesis_family

from search.space.design import extend_design


def one_study(args: tuple) -> tuple[bool, float, bool]:
    """(covered, bias in pp, truly best) of the predicted best of one simulated study."""
    study, blocks, configs, fixed, factors = args
    world = World(configs, "additive", np.random.default_rng([study, blocks]))
    design = extend_design(configs, fixed, None, blocks, study, range(3))
    keys = [k for b in design["blocks"] for k in b["configs"]]
    seeds = [b["seed"] for b in design["blocks"] for _ in b["configs"]]
    effects = fit(world, factors, world.observe(keys, seeds))
    best = effects.best[0]
    index = {json.dumps(c, sort_keys=True): k for k, c in configs.items()}
    truth = world.truth[index[json.dumps(best["settings"], sort_keys=True)]]
    return best["low_pp"] <= truth <= best["high_pp"], best["predicted_pp"] - truth, truth == world.best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--studies", type=int, default=200)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    studies = 4 if args.quick else args.studies
    configs, fixed, factors = thesis_family()
    start, report = time.time(), {}
    with multiprocessing.Pool(2) as pool:
        for blocks in (1, 4):
            rows = pool.map(one_study, [(s, blocks, configs, fixed, factors) for s in range(studies)])
            p = statistics.fmean(r[0] for r in rows)
            half = 1.96 * math.sqrt(p * (1 - p) / len(rows))
            report[f"blocks_{blocks}"] = {
                "studies": len(rows),
                "covered": round(p, 4),
                "covered_ci95": [round(p - half, 4), round(p + half, 4)],
                "mean_bias_pp": round(statistics.fmean(r[1] for r in rows), 3),
                "truly_best": round(statistics.fmean(r[2] for r in rows), 4),
            }
    report["seconds"] = round(time.time() - start, 1)
    emit(report)


if __name__ == "__main__":
    main()
