"""`search status` and `search export` read the study while a run writes it, optuna-dashboard every half second
for the whole run: no "database is locked" on either side, and every read succeeds."""

import subprocess
import sys
import time
import urllib.request

import pytest

from tests.search.helpers import assert_each_point_complete_once, free_port, start_driver, write_space

pytestmark = pytest.mark.slow  # the quick tier is `pytest -m 'not slow'`


def test_readers_never_lock_out_the_driver(tmp_path):
    space = write_space(
        tmp_path / "tiny.yaml", grid={"cam_method": ["gradcam", "eigencam"], "threshold": [0.3, 0.5, 0.6, 0.7, 0.9]}
    )
    storage = f"sqlite:///{tmp_path}/runs/tiny.db"
    port = free_port()
    driver = start_driver(space, tmp_path, "local")  # the driver is the only writer, whichever the executor
    while not (tmp_path / "runs" / "tiny.db").exists():
        time.sleep(0.1)
    dashboard = subprocess.Popen(
        [sys.executable, "-m", "search", "dashboard", "--storage", storage, "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    reads = {"status": 0, "export": 0, "dashboard": 0}
    errors = []
    try:
        while driver.poll() is None:
            if min(reads["status"], reads["export"]) >= 3:  # each a process start: a few, while the run writes
                commands = ()
            else:
                commands = (
                    ("status", ["status", "--study", "tiny"]),
                    ("export", ["export", "--study", "tiny", "--out", str(tmp_path / "t.csv")]),
                )
            for name, args in commands:
                done = subprocess.run(
                    [sys.executable, "-m", "search", *args], cwd=tmp_path, capture_output=True, text=True, timeout=60
                )
                if done.returncode == 0:
                    reads[name] += 1
                elif "no study" not in done.stderr:  # the study is created a moment after the DB file
                    errors.append(done.stderr)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=10) as response:
                    reads["dashboard"] += response.status == 200
            except OSError:
                pass  # still starting
            time.sleep(0.5)
        output = driver.stdout.read()
    finally:
        dashboard.terminate()
        _, dashboard_err = dashboard.communicate(timeout=30)
    assert driver.returncode == 0, output
    assert not errors, errors
    assert "locked" not in output and "locked" not in dashboard_err
    assert reads["status"] >= 3 and reads["export"] >= 3 and reads["dashboard"] >= 1, reads
    assert_each_point_complete_once(tmp_path, 10)
