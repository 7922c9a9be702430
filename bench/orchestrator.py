"""Orchestrator overhead: `search run` of K short trials (local and Ray executors, one trial at a time) against
the same K trials run by `search trial` one after another.

    python bench/orchestrator.py           # K = 8
    python bench/orchestrator.py --quick   # K = 1, the local executor only (Ray's dispatch has its own tests)

Start-up (process start to the first trial's start, read from the study) is reported apart. Overhead = (run time −
start-up) ÷ sequential time − 1. Goal: ≤ 10% beyond a start-up of ≤ 6 s.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import yaml
from common import ROOT, emit, time_search

from search.planning.status import load_trials
from search.space.parse import load_space
from tests.tiny import tiny_space
from trainer.folder import CONFIG


def space(k: int) -> dict:
    return tiny_space(
        study="bench",
        repeats=k,
        datasets={"digits": {"kind": "digits", "limit_per_class": 15}},
        grid={"threshold": [0.5]},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    k = 1 if args.quick else 8
    figures = {"benchmark": "orchestrator", "trials": k}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "space.yaml").write_text(yaml.safe_dump(space(k)))
        spec = load_space(tmp / "space.yaml")
        sequential = 0.0
        for i, point in enumerate(spec.points):
            folder = tmp / "sequential" / str(i)
            folder.mkdir(parents=True)
            (folder / CONFIG).write_text(json.dumps(point.config().to_dict()))
            sequential += time_search(["trial", str(folder / CONFIG), "--out", str(folder)], ROOT)
        figures["sequential_s"] = sequential
        for executor in ("local",) if args.quick else ("local", "ray"):
            cwd = tmp / executor
            cwd.mkdir()
            start = time.time()
            total = time_search(["run", str(tmp / "space.yaml"), "--executor", executor, "--max-concurrent", "1"], cwd)
            trials = load_trials("bench", f"sqlite:///{cwd}/runs/bench.db")
            startup = min(t.datetime_start.timestamp() for t in trials) - start
            figures[executor] = {"total_s": total, "startup_s": startup, "overhead": (total - startup) / sequential - 1}
    figures.update({"goal_overhead": 0.10, "goal_startup_s": 6.0})
    emit(figures)


if __name__ == "__main__":
    main()
