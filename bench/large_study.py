"""`search status`, `export` and `report` on a large real study: 10,000 finished trials with 10 params and 12
metrics, filled through Optuna's storage API.

    python bench/large_study.py           # 10,000 trials (filling them takes about 4 minutes)
    python bench/large_study.py --quick   # 320 trials

Each command is timed as a user runs it: a new process; status and export the median of 3. Goals: status ≤ 2 s,
export ≤ 5 s, report ≤ 60 s.
"""

from __future__ import annotations

import argparse
import datetime
import tempfile
import time
from pathlib import Path

import numpy as np
from common import ROOT, emit, median_seconds, time_search
from optuna.trial import FrozenTrial, TrialState

from search.records.study import GridStudy, optuna_params
from search.space.parse import parse_space
from trainer.metrics import METRICS as ALL_METRICS

METRICS = ALL_METRICS[:12]  # a trial's first 12 metrics: as many as this benchmark was first measured with


def space(quick: bool) -> dict:
    grid = {
        "architecture": ["test_resnet", "test_efficientnet"],
        "cam_method": ["gradcam", "gradcamplusplus", "eigencam", "layercam", "xgradcam"],
        "threshold": [0.1, 0.3, 0.5, 0.7, 0.9],
        "multiply_weight": [0.2, 0.4, 0.6, 0.8, 1.0],
        "wrong_subset": [0.2, 0.4, 0.6, 0.8, 1.0],
        "clear_every_step": [True, False],
        "pixel_replacement": ["blended", "black"],
        "augmentation": ["none", "flip"],
    }
    if quick:
        grid.update(threshold=[0.5], multiply_weight=[0.4, 0.8], wrong_subset=[0.5, 1.0])
    return {
        "study": "large",
        "datasets": {"digits": {"kind": "digits"}},
        "grid": grid,
        "fixed": {"image_size": 64, "proxy_steps": "2,p,2"},
    }


def fill(grid: GridStudy) -> int:
    rng = np.random.default_rng(0)
    now = datetime.datetime.now()
    for pending in grid.pending():
        values = dict(zip(METRICS, rng.random(len(METRICS)).tolist(), strict=False))
        template = FrozenTrial(
            number=-1,
            state=TrialState.COMPLETE,
            value=values["val_accuracy"],
            datetime_start=now,
            datetime_complete=now + datetime.timedelta(seconds=30),
            params=optuna_params(pending.point),
            distributions=grid.distributions(pending.point),
            user_attrs={
                "grid_key": pending.point.grid_key,
                "seed": pending.point.params["seed"],
                "attempt": 1,
                "baseline": False,
                **values,
            },
            system_attrs={},
            intermediate_values={},
            trial_id=-1,
        )
        grid.storage.create_new_trial(grid.study_id, template_trial=template)
    return len(grid.spec.points)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        storage = f"sqlite:///{tmp}/runs/large.db"
        grid = GridStudy.open(parse_space(space(args.quick), tmp / "large.yaml"), storage, tmp / "runs" / "large")
        start = time.perf_counter()
        trials = fill(grid)
        fill_seconds = time.perf_counter() - start
        figures = {
            "benchmark": "large_study",
            "trials": trials,
            "params": 10,
            "metrics": len(METRICS),
            "fill_s": fill_seconds,
            "status_s": median_seconds(
                lambda: time_search(["status", "--study", "large", "--storage", storage], ROOT), 3, warmup=0
            ),
            "export_s": median_seconds(
                lambda: time_search(
                    ["export", "--study", "large", "--storage", storage, "--out", str(tmp / "t.csv")], ROOT
                ),
                3,
                warmup=0,
            ),
            "report_s": time_search(
                ["report", "--study", "large", "--storage", storage, "--out", str(tmp / "report")], ROOT
            ),
            "goals_s": {"status": 2, "export": 5, "report": 60},
        }
    emit(figures)


if __name__ == "__main__":
    main()
