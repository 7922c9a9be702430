"""SIGINT or SIGTERM to the driver: running trials are stopped and recorded as interrupted (not an attempt), exit
130, and the same command again finishes the study."""

import io
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState
from rich.console import Console

from search.planning.options import RunFlags, resolve
from search.records.study import GridStudy
from search.run.dispatch import LocalExecutor
from search.run.driver import Run
from search.run.worker import Job, Settings
from tests.search.helpers import (
    SEARCH,
    assert_each_point_complete_once,
    space,
    spec,
    start_driver,
    trials,
    wait_for_complete,
    write_space,
)

pytestmark = pytest.mark.slow  # the quick tier is `pytest -m 'not slow'`

GRID = {"cam_method": ["gradcam", "eigencam"], "threshold": [0.3, 0.6, 0.9]}


def interrupt_after_a_trial(space: Path, tmp_path: Path, signum: signal.Signals, executor: str) -> None:
    """Start a run of `space` on `executor`, send `signum` once one more trial has completed, check the clean
    stop."""
    before = len([t for t in trials(tmp_path) if t.state == TrialState.COMPLETE])
    # Unshared, each point trains on its own: after the first finishes, seconds of work remain for the signal
    # (shared, the branches of a trained stem can all finish before it lands).
    driver = start_driver(space, tmp_path, executor, "--no-share")
    ended = max(t.datetime_complete for t in wait_for_complete(tmp_path, before + 1, driver))
    # The signal must find a trial running: one the driver opened after that one finished (the other slot's may
    # finish with it, and a signal that lands before the driver opens the next would stop nothing).
    deadline = time.monotonic() + 120
    while not [t for t in trials(tmp_path) if t.state == TrialState.RUNNING and t.datetime_start >= ended]:
        assert driver.poll() is None and time.monotonic() < deadline, "no trial started after the first"
        time.sleep(0.05)
    driver.send_signal(signum)
    output, _ = driver.communicate(timeout=120)
    assert driver.returncode == 130, output
    assert "run the same command to resume" in output
    assert not [t for t in trials(tmp_path) if t.state == TrialState.RUNNING]
    assert all(t.user_attrs["fail_kind"] == "interrupted" for t in trials(tmp_path) if t.state == TrialState.FAIL)


def test_sigterm_and_ctrl_c_stop_cleanly_with_130_and_the_next_run_resumes(tmp_path):
    """SIGTERM to a run on Ray, then Ctrl-C (SIGINT) to the same command run again on the local executor: each
    stops cleanly; a third run finishes the study, every point once."""
    space = write_space(tmp_path / "tiny.yaml", grid=GRID)
    interrupt_after_a_trial(space, tmp_path, signal.SIGTERM, "ray")
    interrupt_after_a_trial(space, tmp_path, signal.SIGINT, "local")
    again = subprocess.run(
        [*SEARCH, "run", str(space), "--executor", "local"], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert_each_point_complete_once(tmp_path, 6)
    info = json.loads(
        subprocess.run(
            [sys.executable, "-m", "search", "status", "--study", "tiny", "--json"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
    )
    assert info["complete"] == 6 and info["failed"] == 0 and info["remaining"] == 0
    # An interrupted try is not a failure anywhere a user reads (issue 24): the summary, the export, the report.
    assert " · 0 failed tries · " in again.stdout
    exported = subprocess.run(
        [sys.executable, "-m", "search", "export", "--study", "tiny"], cwd=tmp_path, capture_output=True, timeout=120
    )
    assert exported.returncode == 0
    rows = (tmp_path / "runs" / "tiny" / "trials.csv").read_text()
    assert ",INTERRUPTED," in rows and ",FAIL," not in rows


class SignalOnSecondSubmit(LocalExecutor):
    """The real local executor, except that a Ctrl-C lands while the second trial is being submitted: after the
    driver created it in the study, before anything runs it."""

    def __init__(self, settings: Settings, log_dir) -> None:
        super().__init__(settings, log_dir)
        self.submits = 0

    def submit(self, job: Job) -> None:
        self.submits += 1
        if self.submits == 2:
            raise KeyboardInterrupt
        super().submit(job)


def test_a_signal_between_creating_and_submitting_a_trial_leaves_nothing_running(tmp_path):
    options = resolve(
        spec(), RunFlags(f"sqlite:///{tmp_path}/s.db", tmp_path / "out", executor="local", share=False, no_cache=True)
    )
    grid = GridStudy.open(spec(), options.storage, options.out_dir)
    executor = SignalOnSecondSubmit(Settings(str(options.out_dir), None), tmp_path / "logs")
    code = Run(grid, executor, Console(file=io.StringIO()), options).drive()
    assert code == 130
    done = grid.trials()
    assert [t.state for t in done] == [TrialState.COMPLETE, TrialState.FAIL]
    assert done[1].user_attrs["fail_kind"] == "interrupted"
    assert len(grid.pending()) == 3 and all(p.attempt == 1 for p in grid.pending())  # an interruption uses none


@pytest.mark.slow
def test_five_quick_sigterms_end_as_cleanly_as_one(tmp_path):
    """Item 24: five quick SIGTERMs gave exit 143, no "interrupted" line, and a trial left RUNNING."""
    import signal

    from tests.search.helpers import start_driver

    path = write_space(tmp_path / "s.yaml", fixed={**space()["fixed"], "proxy_steps": "3,p,3"})
    driver = start_driver(path, tmp_path, "local", "--no-share")
    deadline = time.monotonic() + 120
    while not any(t.state == TrialState.RUNNING for t in trials(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.2)
    for _ in range(5):
        driver.send_signal(signal.SIGTERM)
        time.sleep(0.02)
    out, _ = driver.communicate(timeout=120)
    assert driver.returncode == 130, out
    assert "interrupted:" in out and "Traceback" not in out
    assert not [t for t in trials(tmp_path) if t.state == TrialState.RUNNING]


@pytest.mark.slow
def test_a_driver_whose_shell_ignored_sigint_still_stops_on_it(tmp_path):
    """Issue 24: a driver started with `&` from a script inherits SIGINT ignored, so `kill -INT` did nothing."""
    import signal

    path = write_space(tmp_path / "s.yaml", fixed={**space()["fixed"], "proxy_steps": "3,p,3"})
    driver = subprocess.Popen(
        [*SEARCH, "run", str(path), "--executor", "local", "--no-share"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),  # what `&` in a script does
    )
    deadline = time.monotonic() + 120
    while not any(t.state == TrialState.RUNNING for t in trials(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.2)
    driver.send_signal(signal.SIGINT)
    out, _ = driver.communicate(timeout=120)
    assert driver.returncode == 130 and "interrupted:" in out, out
