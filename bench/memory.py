"""Memory: peak RSS of the driver's bookkeeping over a 1,000-point grid, and of a trial against its dataset size.

    python bench/memory.py           # 1,000 points; trials on 200, 600 and 1,797 digits
    python bench/memory.py --quick   # 100 points; trials on 100 and 300 digits

The driver: opening the study, reconciling, listing what to run, creating and finishing every trial (no training:
that is the executor's memory, in other processes). Each measurement runs in a fresh process.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

from common import ROOT, emit

from trainer.folder import CONFIG

DRIVER = """
import resource, sys
from pathlib import Path
sys.path.insert(0, {root!r})
from search.space.parse import parse_space
from search.records.study import GridStudy
points = {points}
raw = {{"study": "mem", "repeats": points // 10, "datasets": {{"digits": {{"kind": "digits"}}}},
       "fixed": {{"image_size": 64, "architecture": "test_resnet"}},
       "grid": {{"threshold": [0.05 * i for i in range(1, 11)]}}}}
grid = GridStudy.open(parse_space(raw, Path("mem.yaml")), "sqlite:///{tmp}/mem.db", Path("{tmp}/out"))
grid.reconcile()
for pending in grid.pending():
    grid.finish(grid.start(pending), {{"val_accuracy": 0.5, "test_accuracy": 0.5}})
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    points, limits = (100, (10, 30)) if args.quick else (1000, (20, 60, None))
    with tempfile.TemporaryDirectory() as tmp:
        code = DRIVER.format(root=str(ROOT), points=points, tmp=tmp)
        driver = float(
            subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split()[-1]
        )
        trials = []
        for limit in limits:
            folder = Path(tmp) / f"trial-{limit}"
            folder.mkdir()
            config = {
                "dataset": {"kind": "digits", "limit_per_class": limit},
                "image_size": 64,
                "architecture": "test_resnet",
                "proxy_steps": "1,p,1",
            }
            (folder / CONFIG).write_text(json.dumps(config))
            done = subprocess.run(
                [sys.executable, "-m", "search", "trial", str(folder / CONFIG), "--out", str(folder)],
                cwd=ROOT,
                check=True,
                capture_output=True,
                text=True,
            )
            metrics = json.loads(done.stdout)
            trials.append({"images": limit * 10 if limit else 1797, "peak_rss_mb": metrics["peak_rss_mb"]})
    emit(
        {
            "benchmark": "memory",
            "driver_points": points,
            "driver_peak_rss_mb": driver,
            "trials": trials,
            "this_process_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
    )


if __name__ == "__main__":
    main()
