"""A second driver on the same study is refused while the first runs; once the first is killed, its lock is not
stale."""

import signal
import subprocess
import sys

import pytest

from tests.search.helpers import assert_each_point_complete_once, start_driver, wait_for_complete, write_space

pytestmark = pytest.mark.slow  # the quick tier is `pytest -m 'not slow'`


def test_second_driver_refused_then_allowed_after_a_kill(tmp_path):
    space = write_space(tmp_path / "tiny.yaml", repeats=3)  # 12 points: the first is still running when the
    first = start_driver(space, tmp_path, "local")  # second starts (with 4 it could finish first on a busy machine)
    wait_for_complete(tmp_path, 1, first)
    second = subprocess.run(
        [sys.executable, "-m", "search", "run", str(space), "--executor", "local"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert second.returncode == 2
    assert f"another driver is running this study (pid {first.pid}" in second.stderr
    assert "Traceback" not in second.stderr
    first.send_signal(signal.SIGKILL)
    first.wait()
    third = subprocess.run(
        [sys.executable, "-m", "search", "run", str(space), "--executor", "local"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert third.returncode == 0, third.stdout + third.stderr
    assert_each_point_complete_once(tmp_path, 12)
