"""Shared-prefix execution: the same grid run with shared stems and with --no-share, side by side in one run.

    python bench/sharing.py           # 16 points of "3,p,1,p,1" (5 epochs), resnet18 at 64 px on 600 digits
    python bench/sharing.py --quick   # 2 points (one stem, two branches), test_resnet on 120 digits, local executor

Prints one JSON object: wall seconds of each run (`search run`, local Ray, 2 trials at once on 2 cores), epochs
computed (counted in every trial's and stem's log), the speedup (goal ≥ 2×), whether every point's metrics are
identical in both runs, and the epochs of spaces/thesis_grid.yaml each point from scratch ÷ with stems, from its
--dry-run (expect ≥ 1.5×).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from common import ROOT, emit

from search.planning.status import dry_run_plan
from search.space.parse import load_space, parse_space
from tests.tiny import TIMING, tiny_fixed
from trainer.folder import LOG, RESULT


def space(quick: bool) -> dict:
    if quick:  # one stem, two branches: on tiny trials each sequential level's wait for a Ray worker sets the time
        grid = {"cam_method": ["gradcam"], "threshold": [0.3, 0.6], "clear_every_step": [True]}
    else:
        grid = {
            "cam_method": ["gradcam", "eigencam"],
            "threshold": [0.3, 0.6],
            "clear_every_step": [True, False],
            "wrong_subset": [0.5, 1.0],
        }
    return {
        "study": "sharing",
        "datasets": {"digits": {"kind": "digits", "limit_per_class": 12 if quick else 60}},
        "fixed": tiny_fixed(architecture="test_resnet" if quick else "resnet18", proxy_steps="3,p,1,p,1"),
        "grid": grid,
    }


def run(folder: Path, data: dict, *extra: str) -> float:
    folder.mkdir()
    (folder / "sharing.yaml").write_text(yaml.safe_dump(data))
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "search", "run", "sharing.yaml", *extra], cwd=folder, check=True, capture_output=True
    )
    return time.perf_counter() - start


def results(folder: Path) -> dict[str, dict]:
    out = {}
    for path in (folder / "runs" / "sharing" / "trials").glob(f"*/{RESULT}"):
        key = json.loads((path.parent / "config.json").read_text())
        metrics = json.loads(path.read_text())["metrics"]
        out[json.dumps(key, sort_keys=True)] = {k: v for k, v in metrics.items() if k not in TIMING}
    return out


def epochs(folder: Path) -> int:
    return sum(
        len(re.findall(r"INFO epoch \d+/\d+:", log.read_text()))
        for log in (folder / "runs" / "sharing").glob(f"*/*/{LOG}")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    data = space(args.quick)
    # The quick form (what CI runs) checks the script and the sharing, not Ray, which the tests start often enough.
    executor = ["--executor", "local"] if args.quick else []
    with tempfile.TemporaryDirectory() as tmp:
        shared_s = run(Path(tmp) / "shared", data, *executor)
        alone_s = run(Path(tmp) / "alone", data, "--no-share", *executor)
        same = results(Path(tmp) / "shared") == results(Path(tmp) / "alone")
        shared_epochs, alone_epochs = epochs(Path(tmp) / "shared"), epochs(Path(tmp) / "alone")
    thesis = load_space(ROOT / "spaces" / "thesis_grid.yaml", check_roots=False)
    plan = dry_run_plan(thesis, "sqlite:////nonexistent/none.db", Path("/nonexistent"), "/nonexistent", True)
    points = len(parse_space(data, Path("sharing.yaml"), check_roots=False).points)
    emit(
        {
            "benchmark": "sharing",
            "points": points,
            "shared_s": shared_s,
            "no_share_s": alone_s,
            "speedup": alone_s / shared_s,
            "goal_speedup": 2.0,
            "epochs_shared": shared_epochs,
            "epochs_no_share": alone_epochs,
            "identical_results": same,
            "thesis_grid_epochs_naive": plan["epochs_naive"],
            "thesis_grid_epochs_shared": plan["epochs_shared"],
            "thesis_grid_ratio": plan["epochs_naive"] / plan["epochs_shared"],
            "thesis_grid_stems": plan["stems"],
        }
    )


if __name__ == "__main__":
    main()
