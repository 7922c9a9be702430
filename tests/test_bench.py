"""Every benchmark's --quick form runs and prints its one JSON object, so the scripts cannot rot. (Their figures
are not checked here: speed targets live in bench/ and the README, never in timed tests. bench/soak.py is the long
form of tests/faults/test_driver_kills.py and stays out of CI.)"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # the quick tier is `pytest -m 'not slow'`

BENCH = Path(__file__).resolve().parents[1] / "bench"
EXPECTED = {
    "proxy_step.py": {"rows", "worst_gradient_cam_ratio", "reference_speedup"},
    "trainer.py": {"ours_images_per_s", "bare_images_per_s", "ratio"},
    "augmentations.py": {"step_ratio", "saliency_loss_step_ratio"},
    "orchestrator.py": {"sequential_s", "local"},
    "large_study.py": {"status_s", "export_s", "report_s"},
    "memory.py": {"driver_peak_rss_mb", "trials"},
    "data.py": {"speedup", "cache_trial_rss_mb", "today_trial_rss_mb", "cached_startup_s", "proxy_steps"},
    "gpu_check.py": {"benchmark", "cases", "ok", "failed", "skipped"},
    "sharing.py": {"speedup", "identical_results", "thesis_grid_ratio"},
    "halving.py": {"epochs_ratio", "same_best_configuration"},
    "artifacts.py": {"s3_overhead_fraction_of_epoch", "scratch_files_left"},
    "dry_run.py": {"thesis_grid_warm_s", "big_grid_s", "refusal"},
    "verdicts.py": {"studies", "cases"},
    "predicted_best.py": {"blocks_1", "blocks_4", "seconds"},
    "design.py": {"additive", "grouped", "crossover", "heavy", "seconds"},
    "effects_null.py": {
        "some_axis_named_study_wide_holm",
        "some_axis_named_holm_per_family",
        "proxy_steps_level_coverage",
    },
}


@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_quick_benchmark_prints_its_figures(script):
    done = subprocess.run([sys.executable, script, "--quick"], cwd=BENCH, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert EXPECTED[script] <= set(figures) and figures["machine"]["cores"] >= 1
    if script == "gpu_check.py":  # its CPU form: every case ran, none failed
        assert figures["ok"] and not figures["failed"] and not figures["skipped"], figures
    if script == "design.py":  # every protocol side by side under every truth, at equal cost (±8 trials of 128)
        for truth in ("additive", "grouped", "crossover", "heavy"):
            protocols = figures[truth]
            assert set(protocols) == {"design", "learning", "random", "optuna-tpe", "halving"}
            assert all(abs(p["trials"] - 128) <= 8 for p in protocols.values()), protocols


def test_the_device_check_prints_every_case_and_its_summary_whatever_happens():
    """bench/gpu_check.py: one JSON line per case as it ends, and the summary even when the budget is spent."""
    done = subprocess.run(
        [sys.executable, "gpu_check.py", "--quick", "--budget", "1"],
        cwd=BENCH,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(line) for line in done.stdout.strip().splitlines()]
    cases, summary = lines[:-1], lines[-1]
    assert len(cases) == summary["cases"] == 9 and all(c["ok"] is None and "skipped" in c for c in cases)
    assert summary["skipped"] == [c["case"] for c in cases] and summary["benchmark"] == "gpu_check"
