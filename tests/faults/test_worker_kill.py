"""A Ray worker SIGKILLed mid-trial: that trial fails with the worker's death as reason and is retried (resuming
from its checkpoint); the other trials are untouched."""

import threading
import time

import optuna
import psutil
import pytest
from optuna.trial import TrialState

from tests.faults.conftest import run_in_process
from tests.search.helpers import spec
from tests.tiny import tiny_fixed

pytestmark = pytest.mark.slow  # the quick tier is `pytest -m 'not slow'`

FIXED = tiny_fixed(proxy_steps="3,p,3")


def test_a_killed_worker_is_retried(local_ray, tmp_path):
    killed = []

    def kill_one_running_trial():
        # Kill the worker of a trial that has a checkpoint, found by the trial.log it holds open: with two trials
        # running, killing any worker could hit the one that has no checkpoint yet and there is nothing to resume.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            logs = {str(c.parent / "trial.log") for c in (tmp_path / "out" / "trials").glob("*/checkpoint.pt")}
            for process in psutil.process_iter(["pid", "cmdline"]):
                if logs and "ray::run_task" in " ".join(process.info["cmdline"] or []):
                    try:
                        if logs & {f.path for f in process.open_files()}:
                            process.kill()
                            killed.append(process.info["pid"])
                            break
                    except psutil.Error:
                        continue
            time.sleep(0.02)

    thread = threading.Thread(target=kill_one_running_trial)
    thread.start()
    code, options = run_in_process(spec(fixed=FIXED), tmp_path)
    thread.join()
    assert killed and code == 0
    trials = optuna.load_study(study_name="tiny", storage=options.storage).get_trials(deepcopy=False)
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(failed) == 1 and failed[0].user_attrs["attempt"] == 1
    reason = failed[0].user_attrs["fail_reason"]
    assert "Worker" in reason or "died" in reason or "crash" in reason.lower(), reason
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 4 and len({t.user_attrs["grid_key"] for t in complete}) == 4
    retry = next(t for t in complete if t.user_attrs["grid_key"] == failed[0].user_attrs["grid_key"])
    assert retry.user_attrs["attempt"] == 2
    assert all(t.user_attrs["attempt"] == 1 for t in complete if t is not retry)
    log = tmp_path / "out" / "trials" / f"{retry.number}-{retry.user_attrs['grid_key'][:8]}" / "trial.log"
    assert "resuming after epoch" in log.read_text()
