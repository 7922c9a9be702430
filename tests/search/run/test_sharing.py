"""Shared-prefix execution end to end: the same grid run with stems and with --no-share gives every point exactly
the same metrics on the CPU, with fewer epochs trained; a driver killed while a stem runs, or while its branches
run, loses nothing and changes nothing."""

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState

from tests.conftest import without_timing
from tests.search.helpers import assert_each_point_complete_once, start_driver, trials, write_space
from tests.search.planning.test_plan import sharing_spec

pytestmark = pytest.mark.slow  # the quick tier is `pytest -m 'not slow'`


def write(tmp_path: Path) -> Path:
    data = sharing_spec().to_data()
    return write_space(tmp_path / "tiny.yaml", fixed=data["fixed"], grid=data["grid"])


def results(cwd: Path) -> dict[str, dict]:
    """grid_key -> the non-timing metrics of its COMPLETE trial, from its result.json."""
    out = {}
    for t in trials(cwd):
        if t.state == TrialState.COMPLETE:
            folder = cwd / "runs" / "tiny" / "trials" / f"{t.number}-{t.user_attrs['grid_key'][:8]}"
            metrics = json.loads((folder / "result.json").read_text())["metrics"]
            out[t.user_attrs["grid_key"]] = without_timing(metrics)
    return out


def epochs_trained(cwd: Path) -> int:
    """Epochs actually computed, counted from every trial's and stem's log."""
    runs = cwd / "runs" / "tiny"
    return sum(len(re.findall(r"INFO epoch \d+/\d+:", log.read_text())) for log in runs.glob("*/*/trial.log"))


def run(space: Path, cwd: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "search", "run", str(space), "--executor", "local", *extra],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.fixture(scope="module")
def shared_run(tmp_path_factory) -> tuple[Path, Path, subprocess.CompletedProcess, subprocess.CompletedProcess]:
    """The grid planned and run with shared stems, once for this module: its space, folder, plan and run."""
    tmp = tmp_path_factory.mktemp("sharing")
    shared = tmp / "shared"
    shared.mkdir()
    space = write(tmp)
    return space, shared, run(space, shared, "--dry-run"), run(space, shared)


def test_shared_and_unshared_runs_give_identical_metrics(tmp_path, shared_run):
    space, shared, plan, done = shared_run
    alone = tmp_path / "alone"
    alone.mkdir()
    assert "32 each point from scratch, 14 with 5 shared stems" in plan.stdout, plan.stdout
    assert done.returncode == 0, done.stdout + done.stderr
    assert "14 of 32 epochs trained (shared prefixes)" in done.stdout
    assert run(space, alone, "--no-share").returncode == 0
    assert_each_point_complete_once(shared, 8)
    a, b = results(shared), results(alone)
    assert len(a) == 8 and a == b  # exactly, every metric of every point
    assert epochs_trained(shared) == 14 < epochs_trained(alone) == 32
    assert len(list((shared / "runs" / "tiny" / "stems").iterdir())) == 5
    assert not (alone / "runs" / "tiny" / "stems").exists()
    status = subprocess.run(
        [sys.executable, "-m", "search", "status", "--study", "tiny"],
        cwd=shared,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "8 complete" in status.stdout


def wait_for(condition, process, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        assert process.poll() is None, process.stdout.read()
        time.sleep(0.05)
    raise AssertionError("never happened")


def test_killing_the_driver_during_a_stem_and_during_branches_loses_nothing(tmp_path, shared_run):
    space, reference, _, uninterrupted = shared_run
    assert uninterrupted.returncode == 0
    killed = tmp_path / "killed"
    killed.mkdir()
    stems = killed / "runs" / "tiny" / "stems"

    def stem_running():  # the root stem has a checkpoint but has not finished
        return any((d / "checkpoint.pt").exists() and not (d / "result.json").exists() for d in stems.glob("*"))

    def branches_running():
        return any(t.state == TrialState.RUNNING for t in trials(killed))

    for condition in (stem_running, branches_running):
        driver = start_driver(space, killed, "local")
        wait_for(condition, driver)
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        if condition is stem_running:  # the root stem died half-way: status shows every stem still to run
            status = subprocess.run(
                [sys.executable, "-m", "search", "status", "--study", "tiny"],
                cwd=killed,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert "shared stems of the points left: 0 done, 5 to run" in status.stdout, status.stdout
    done = run(space, killed)
    assert done.returncode == 0, done.stdout + done.stderr
    assert_each_point_complete_once(killed, 8)
    assert results(killed) == results(reference)
