"""How long `search run --dry-run` takes: the thesis grid (54,720 points) and a 1,000,000-point grid.

    python bench/dry_run.py           # the thesis grid, cold and warm; a grid of 100 × 100 × 100 points
    python bench/dry_run.py --quick   # the thesis grid; a grid of 10 × 10 × 100 points

Cold: a fresh user cache (the model checks import torch and timm and build each model once on the meta device).
Warm: the model checks answered from the cache, as for every later run of the same space. Goals: the thesis grid
≤ 3 s, 1,000,000 points ≤ 20 s. A space above --max-points (default 1,000,000) is refused before anything is
enumerated: that refusal is timed on a grid of 999³ points.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from common import ROOT, emit


def dry_run(space: Path, cache: Path) -> tuple[float, str]:
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "search", "run", str(space), "--dry-run"],
        cwd=space.parent,
        capture_output=True,
        text=True,
        env=env,
    )
    return time.perf_counter() - start, done.stdout + done.stderr


def grid(tmp: Path, name: str, sizes: tuple[int, int, int]) -> Path:
    axes = {
        "threshold": [round(i / sizes[0], 6) for i in range(sizes[0])],
        "multiply_weight": [round(i / sizes[1], 6) for i in range(sizes[1])],
        "wrong_subset": [round((i + 1) / sizes[2], 6) for i in range(sizes[2])],
    }
    path = tmp / f"{name}.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "study": name,
                "datasets": {"digits": {"kind": "digits"}},
                "fixed": {"image_size": 64, "architecture": "test_resnet", "proxy_steps": "1,p,1"},
                "grid": axes,
            }
        )
    )
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    sizes = (10, 10, 100) if args.quick else (100, 100, 100)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        thesis = tmp / "thesis_grid.yaml"
        thesis.write_text((ROOT / "spaces" / "thesis_grid.yaml").read_text())
        cold, output = dry_run(thesis, tmp / "cache")
        warm, _ = dry_run(thesis, tmp / "cache")
        big = grid(tmp, "big", sizes)
        dry_run(big, tmp / "cache")  # its model checks, once
        big_s, big_output = dry_run(big, tmp / "cache")
        huge_s, huge_output = dry_run(grid(tmp, "huge", (999, 999, 999)), tmp / "cache")
    emit(
        {
            "benchmark": "dry_run",
            "thesis_grid_cold_s": cold,
            "thesis_grid_warm_s": warm,
            "thesis_grid_plan": next((line for line in output.splitlines() if line.startswith("epochs")), ""),
            "big_grid_points": sizes[0] * sizes[1] * sizes[2],
            "big_grid_s": big_s,
            "big_grid_said": big_output.splitlines()[0] if big_output else "",
            "refused_999_cubed_s": huge_s,
            "refusal": huge_output.strip().splitlines()[-1],
            "goal_thesis_grid_s": 3,
            "goal_big_grid_s": 20,
        }
    )


if __name__ == "__main__":
    main()
