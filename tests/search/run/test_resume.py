"""The driver killed (-9) mid-run, then the same command again: nothing lost, nothing run twice, and the trial
that was running resumes from its checkpoint. (Signals, readers and repeated kills: tests/faults/.)"""

import signal
import subprocess
import sys

import pytest

from tests.search.helpers import (
    assert_each_point_complete_once,
    assert_orphans_resumed,
    start_driver,
    wait_for_complete,
    write_space,
)

pytestmark = pytest.mark.slow  # the quick tier is `pytest -m 'not slow'`

GRID = {"cam_method": ["gradcam", "eigencam"], "threshold": [0.3, 0.6, 0.9]}


def test_kill_9_then_the_same_command_finishes_without_redoing_work(tmp_path):
    space = write_space(tmp_path / "tiny.yaml", grid=GRID)
    driver = start_driver(space, tmp_path, "local")
    before = wait_for_complete(tmp_path, 3, driver)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    values_before = {t.number: t.value for t in before}

    again = subprocess.run(
        [sys.executable, "-m", "search", "run", str(space), "--executor", "local"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0, again.stdout + again.stderr
    values_after = assert_each_point_complete_once(tmp_path, 6)
    assert {n: values_after[n] for n in values_before} == values_before  # earlier results unchanged
    assert_orphans_resumed(tmp_path)
