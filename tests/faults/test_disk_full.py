"""The trial folders on a small tmpfs that fills up: trials fail cleanly saying what filled up, the database and
every completed trial stay intact, and with space again the same study finishes."""

import json
import os
import sqlite3
import subprocess
import uuid

import optuna
import pytest
from optuna.trial import TrialState

from search.records.paths import trial_folder
from tests.faults.conftest import run_in_process
from tests.search.helpers import mounted_tmpfs, spec

pytestmark = pytest.mark.slow  # the quick tier is `pytest -m 'not slow'`


@pytest.fixture
def small_disk(tmp_path):
    yield from mounted_tmpfs(tmp_path / f"tmpfs-{uuid.uuid4().hex[:6]}", "size=16m")


def test_disk_full_fails_trials_cleanly_and_loses_nothing(local_ray, tmp_path, small_disk):
    s = spec(grid={"cam_method": ["gradcam", "eigencam"], "threshold": [0.3, 0.6, 0.9]})
    code, options = run_in_process(s, tmp_path, out=small_disk)
    assert code == 1
    storage = options.storage
    trials = optuna.load_study(study_name="tiny", storage=storage).get_trials(deepcopy=False)
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert failed and any("disk full while writing" in t.user_attrs["fail_reason"] for t in failed)
    assert all(
        "disk full" in t.user_attrs["fail_reason"] or "[Errno 28]" in t.user_attrs["fail_reason"] for t in failed
    )
    assert {t.user_attrs["fail_kind"] for t in failed} == {"disk_full"}  # the machine's fault: no attempt used
    assert all("\n" not in t.user_attrs["fail_reason"] for t in failed)
    # Once a disk is full nothing new starts (each try would add a folder to it): only the trials already running
    # when the first one failed (2 slots) can fail too.
    assert len(failed) <= 2, [t.user_attrs["fail_reason"] for t in failed]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    for t in complete:  # every completed trial's folder is whole
        result = json.loads((small_disk / trial_folder(t.number, t.user_attrs["grid_key"]) / "result.json").read_text())
        assert result["metrics"]["val_accuracy"] == t.value
    with sqlite3.connect(tmp_path / "study.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    subprocess.run(["mount", "-o", "remount,size=400m", str(small_disk)], check=True)
    values = {t.number: t.value for t in complete}
    again, _ = run_in_process(s, tmp_path, out=small_disk)
    assert again == 0
    trials = optuna.load_study(study_name="tiny", storage=storage).get_trials(deepcopy=False)
    assert {t.number: t.value for t in trials if t.number in values} == values
    assert len({t.user_attrs["grid_key"] for t in trials if t.state == TrialState.COMPLETE}) == 6
    assert os.path.ismount(small_disk)
