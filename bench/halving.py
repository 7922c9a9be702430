"""Successive halving against the full grid, side by side in one run: 27 points, keep 1/3 at one rung.

    python bench/halving.py           # 27 points of "1,p,4" (5 epochs), rung at epoch 2, resnet18 on 600 digits
    python bench/halving.py --quick   # 3 of those points (gradcam, one multiply_weight), test_resnet on 120 digits,
                                      # local executor

Prints one JSON object: epochs computed (counted in the logs) and wall seconds of each run, the points stopped,
and the best configuration by the objective in each (whether halving kept the full grid's best, reported either way).
Shared stems are off in both, so that the saving is halving's alone.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from common import emit
from optuna.trial import TrialState

from search.planning.status import load_trials
from tests.tiny import tiny_fixed
from trainer.folder import LOG


def space(quick: bool, halving: bool) -> dict:
    data = {
        "study": "halving",
        "datasets": {"digits": {"kind": "digits", "limit_per_class": 12 if quick else 60}},
        "fixed": tiny_fixed(architecture="test_resnet" if quick else "resnet18", proxy_steps="1,p,4"),
        "grid": {
            "cam_method": ["gradcam"] if quick else ["gradcam", "gradcamplusplus", "eigencam"],
            "threshold": [0.2, 0.5, 0.8],
            "multiply_weight": [0.5] if quick else [0.2, 0.5, 0.8],
        },
    }
    if halving:
        data["halving"] = {"rungs": [2], "keep": "1/3"}
    return data


def run(folder: Path, data: dict, *flags: str) -> dict:
    folder.mkdir()
    (folder / "halving.yaml").write_text(yaml.safe_dump(data))
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "search", "run", "halving.yaml", "--no-share", *flags],
        cwd=folder,
        check=True,
        capture_output=True,
    )
    seconds = time.perf_counter() - start
    trials = load_trials("halving", f"sqlite:///{folder}/runs/halving.db")
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = max(complete, key=lambda t: t.value)
    epochs = sum(
        len(re.findall(r"INFO epoch \d+/\d+:", log.read_text()))
        for log in (folder / "runs" / "halving").glob(f"*/*/{LOG}")
    )
    return {
        "seconds": seconds,
        "epochs": epochs,
        "complete": len(complete),
        "stopped": sum(t.state == TrialState.PRUNED for t in trials),
        "best": best.params,
        "best_value": best.value,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        executor = ["--executor", "local"] if args.quick else []  # the quick form checks halving, not Ray
        halved = run(Path(tmp) / "halving", space(args.quick, True), *executor)
        full = run(Path(tmp) / "full", space(args.quick, False), *executor)
    emit(
        {
            "benchmark": "halving",
            "points": 3 if args.quick else 27,
            "halving": halved,
            "full": full,
            "epochs_ratio": full["epochs"] / halved["epochs"],
            "wall_ratio": full["seconds"] / halved["seconds"],
            "same_best_configuration": halved["best"] == full["best"],
        }
    )


if __name__ == "__main__":
    main()
