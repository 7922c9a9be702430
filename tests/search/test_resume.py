"""The driver killed (-9) or interrupted (SIGINT) mid-run, then the same command again: nothing lost, nothing run
twice. Meanwhile `status`, `export` and optuna-dashboard read the study: the driver never fails for it."""

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter

import pytest
from optuna.trial import TrialState

from results.load import trial_rows
from search.inspect import load_study, status
from search.study import StudyError
from tests.search.helpers import write_space

GRID = {"cam_method": ["gradcam", "eigencam"], "threshold": [0.3, 0.6, 0.9]}


def start_driver(space, cwd, executor):
    return subprocess.Popen([sys.executable, "-m", "search", "run", str(space), "--executor", executor],
                            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def trials(cwd):
    try:
        return load_study("tiny", f"sqlite:///{cwd}/runs/tiny.db").get_trials(deepcopy=False)
    except StudyError:
        return []


def wait_for_complete(cwd, count, process, readers=None, timeout=240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if readers:
            readers()
        done = [t for t in trials(cwd) if t.state == TrialState.COMPLETE]
        if len(done) >= count:
            return done
        assert process.poll() is None, process.stdout.read()
        time.sleep(0.2)
    raise AssertionError("no progress")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_each_point_complete_once(cwd, points):
    all_trials = trials(cwd)
    complete = Counter(t.user_attrs["grid_key"] for t in all_trials if t.state == TrialState.COMPLETE)
    assert len(complete) == points and set(complete.values()) == {1}
    assert not [t for t in all_trials if t.state == TrialState.RUNNING]
    return {t.number: t.value for t in all_trials if t.state == TrialState.COMPLETE}


def test_kill_9_then_the_same_command_finishes_without_redoing_work(tmp_path):
    space = write_space(tmp_path / "tiny.yaml", grid=GRID)
    storage = f"sqlite:///{tmp_path}/runs/tiny.db"
    port = free_port()
    driver = start_driver(space, tmp_path, "local")
    wait_for_complete(tmp_path, 1, driver)
    dashboard = subprocess.Popen([sys.executable, "-m", "search", "dashboard", "--storage", storage,
                                  "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    reads = Counter()

    def readers():
        status(load_study("tiny", storage))
        trial_rows(load_study("tiny", storage))
        reads["db"] += 1
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as response:
                reads["dashboard"] += "tiny" in response.read().decode()
        except OSError:
            pass  # still starting

    try:
        before = wait_for_complete(tmp_path, 3, driver, readers)
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        values_before = {t.number: t.value for t in before}
        assert reads["db"] > 3 and reads["dashboard"] >= 1

        again = subprocess.run([sys.executable, "-m", "search", "run", str(space), "--executor", "local"],
                               cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert again.returncode == 0, again.stdout + again.stderr
        values_after = assert_each_point_complete_once(tmp_path, 6)
        assert {n: values_after[n] for n in values_before} == values_before  # earlier results unchanged
        orphans = [t for t in trials(tmp_path) if t.user_attrs.get("fail_kind") == "orphaned"]
        assert len(orphans) <= 1  # the local executor runs one trial at a time
        for orphan in orphans:
            assert "reconciled" in again.stdout
            key = orphan.user_attrs["grid_key"]
            old = tmp_path / "runs" / "tiny" / "trials" / f"{orphan.number}-{key[:8]}"
            rerun = [t for t in trials(tmp_path) if t.user_attrs["grid_key"] == key and t.number > orphan.number]
            new = tmp_path / "runs" / "tiny" / "trials" / f"{rerun[0].number}-{key[:8]}"
            if (old / "checkpoint.pt").exists():
                assert "resuming after epoch" in (new / "trial.log").read_text()
    finally:
        dashboard.terminate()
        dashboard.wait(timeout=30)


def test_sigint_stops_cleanly_with_130_and_the_next_run_resumes(tmp_path):
    space = write_space(tmp_path / "tiny.yaml", grid=GRID)
    driver = start_driver(space, tmp_path, "ray")
    wait_for_complete(tmp_path, 1, driver)
    driver.send_signal(signal.SIGINT)
    output, _ = driver.communicate(timeout=120)
    assert driver.returncode == 130, output
    assert "run the same command to resume" in output
    assert not [t for t in trials(tmp_path) if t.state == TrialState.RUNNING]
    assert all(t.user_attrs["fail_kind"] == "interrupted" for t in trials(tmp_path) if t.state == TrialState.FAIL)

    again = subprocess.run([sys.executable, "-m", "search", "run", str(space)], cwd=tmp_path, capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert_each_point_complete_once(tmp_path, 6)
    info = json.loads(subprocess.run([sys.executable, "-m", "search", "status", "--study", "tiny", "--json"],
                                     cwd=tmp_path, capture_output=True, text=True, timeout=120).stdout)
    assert info["complete"] == 6 and info["failed"] == 0 and info["remaining"] == 0
    exported = subprocess.run([sys.executable, "-m", "search", "export", "--study", "tiny"], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)
    assert exported.returncode == 0 and (tmp_path / "runs" / "tiny" / "trials.csv").exists()
