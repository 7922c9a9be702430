"""The driver SIGKILLed at random moments (during start-up and reconciliation, while trials run, while results are
recorded), five times, then run to the end: every point COMPLETE exactly once, nothing RUNNING, no completed trial
changed, and interrupted trials resumed from their last checkpoint. bench/soak.py does the same 50 times."""

import random
import signal
import subprocess
import sys
import time

import pytest
from optuna.trial import TrialState

from tests.search.helpers import (
    assert_each_point_complete_once,
    assert_orphans_resumed,
    start_driver,
    trials,
    write_space,
)
from tests.tiny import tiny_fixed

pytestmark = pytest.mark.slow  # the quick tier is `pytest -m 'not slow'`

GRID = {"cam_method": ["gradcam", "eigencam"], "threshold": [0.3, 0.6, 0.9]}
FIXED = tiny_fixed(proxy_steps="2,p,2")


def test_five_random_kills_lose_nothing(tmp_path):
    space = write_space(tmp_path / "tiny.yaml", grid=GRID, fixed=FIXED)
    rng = random.Random(7)
    seen: dict[int, float] = {}
    for _ in range(5):
        driver = start_driver(space, tmp_path, "local")
        time.sleep(rng.uniform(0.5, 12.0))
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        now = {t.number: t.value for t in trials(tmp_path) if t.state == TrialState.COMPLETE}
        assert {n: now[n] for n in seen} == seen  # a completed trial never changes
        seen = now
    done = subprocess.run(
        [sys.executable, "-m", "search", "run", str(space), "--executor", "local"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    final = assert_each_point_complete_once(tmp_path, 6)
    assert {n: final[n] for n in seen} == seen
    assert_orphans_resumed(tmp_path)
