"""Soak: SIGKILL the `search run` driver at random moments, many times, then let it finish; prove nothing was lost.

    python bench/soak.py --kills 50            # ~15 minutes on 2 CPU cores
    python bench/soak.py --kills 5 --points 8  # a quick look

Prints one JSON object: kills, points, trials, orphaned trials, how many resumed from their checkpoint, and the
losses (completed trials that changed, points not COMPLETE exactly once, trials left RUNNING), which must all be 0.
Exit status 0 when nothing was lost.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import yaml
from common import ROOT  # noqa: F401  (puts the project on the path)
from optuna.trial import TrialState

from search.planning.status import load_trials
from search.records.paths import trial_folder
from search.records.storage import StudyError
from tests.tiny import tiny_fixed
from trainer.folder import CHECKPOINT, LOG

CAMS = ["gradcam", "eigencam", "gradcamplusplus", "layercam", "xgradcam", "hirescam", "eigengradcam", "kpcacam"]
FIXED = tiny_fixed(proxy_steps="2,p,2")


def trials(workdir: Path) -> list:
    """The soak study's trials ([] before the driver made it)."""
    try:
        return load_trials("soak", f"sqlite:///{workdir}/runs/soak.db")
    except StudyError:
        return []


def start_driver(space: Path, workdir: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "search", "run", str(space), "--executor", "local"],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def orphans_not_resumed(workdir: Path, all_trials: list) -> tuple[int, int]:
    """(completed points that resumed from an earlier try's checkpoint, those that should have and did not)."""
    resumed = missed = 0
    folders = workdir / "runs" / "soak"
    for done in [t for t in all_trials if t.state == TrialState.COMPLETE]:
        key = done.user_attrs["grid_key"]
        earlier = [t for t in all_trials if t.user_attrs["grid_key"] == key and t.number < done.number]
        if any((folders / trial_folder(t.number, key) / CHECKPOINT).exists() for t in earlier):
            log = (folders / trial_folder(done.number, key) / LOG).read_text()
            resumed += "resuming after epoch" in log
            missed += "resuming after epoch" not in log
    return resumed, missed


def soak(kills: int, points: int, seed: int, workdir: Path) -> dict:
    """Run the soak in `workdir`; return its figures."""
    thresholds = [round(0.1 + 0.8 * i / max(points // len(CAMS) - 1, 1), 3) for i in range(max(points // len(CAMS), 1))]
    grid = {"cam_method": CAMS[: min(points, len(CAMS))], "threshold": thresholds}
    space = workdir / "soak.yaml"
    space.write_text(
        yaml.safe_dump(
            {
                "study": "soak",
                "max_attempts": 2,
                "datasets": {"digits": {"kind": "digits", "limit_per_class": 20}},
                "fixed": FIXED,
                "grid": grid,
            }
        )
    )
    n_points = len(grid["cam_method"]) * len(thresholds)
    rng = random.Random(seed)
    seen: dict[int, float] = {}
    changed = done_kills = early_exits = 0
    start = time.monotonic()
    while done_kills < kills and early_exits < 3:
        driver = start_driver(space, workdir)
        time.sleep(rng.uniform(1.0, 20.0))
        if driver.poll() is not None:  # it finished before the kill: the grid is done (or the driver is broken)
            early_exits += 1
            continue
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        done_kills += 1
        now = {t.number: t.value for t in trials(workdir) if t.state == TrialState.COMPLETE}
        changed += sum(now.get(n) != v for n, v in seen.items())
        seen = now
        print(f"kill {done_kills}/{kills}: {len(now)}/{n_points} complete", file=sys.stderr, flush=True)
    final = subprocess.run(
        [sys.executable, "-m", "search", "run", str(space), "--executor", "local"],
        cwd=workdir,
        capture_output=True,
        text=True,
    )
    all_trials = trials(workdir)
    complete = Counter(t.user_attrs["grid_key"] for t in all_trials if t.state == TrialState.COMPLETE)
    now = {t.number: t.value for t in all_trials if t.state == TrialState.COMPLETE}
    changed += sum(now.get(n) != v for n, v in seen.items())
    resumed, not_resumed = orphans_not_resumed(workdir, all_trials)
    figures = {
        "kills": done_kills,
        "points": n_points,
        "trials": len(all_trials),
        "orphaned": sum(t.user_attrs.get("fail_kind") == "orphaned" for t in all_trials),
        "completed_after_resuming_from_checkpoint": resumed,
        "changed_completed_trials": changed,
        "points_not_complete_exactly_once": n_points - sum(1 for c in complete.values() if c == 1),
        "left_running": sum(t.state == TrialState.RUNNING for t in all_trials),
        "orphans_not_resumed": not_resumed,
        "final_exit_code": final.returncode,
        "database_locked_errors": (final.stdout + final.stderr).count("database is locked"),
        "seconds": round(time.monotonic() - start, 1),
    }
    losses = (
        "changed_completed_trials",
        "points_not_complete_exactly_once",
        "left_running",
        "orphans_not_resumed",
        "final_exit_code",
        "database_locked_errors",
    )
    figures["lost"] = sum(figures[k] for k in losses)
    figures["ok"] = figures["lost"] == 0
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--points", type=int, default=64, help="grid size (rounded to a multiple of 8)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, help="run in this folder and keep it (default: a temporary one)")
    args = parser.parse_args()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        figures = soak(args.kills, args.points, args.seed, args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
            figures = soak(args.kills, args.points, args.seed, Path(tmp))
    print(json.dumps(figures))
    return 0 if figures["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
