"""What every benchmark shares: medians of repeated timings, the machine and versions, and the JSON it prints."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """The median wall time of `fn()` over `repeats` runs, after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_search(args: list[str], cwd: Path) -> float:
    """Wall seconds of one `search ARGS` process, as a user runs it (imports included)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "search", *args], cwd=cwd, check=True, capture_output=True, timeout=1800)
    return time.perf_counter() - start


def machine() -> dict:
    """Where the numbers were measured."""
    import torch

    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "versions": {p: importlib.metadata.version(p) for p in ("torch", "timm", "grad-cam", "optuna", "ray")},
    }


def emit(figures: dict) -> None:
    """Print the benchmark's one JSON object."""
    print(json.dumps({**figures, "machine": machine()}, default=float))
