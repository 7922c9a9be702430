"""The local executor's warm worker, started before the first job."""

import time

from search.dispatch import LocalExecutor
from search.worker import Job, Settings
from trainer.config import TrialConfig


def test_the_local_worker_started_with_the_run_serves_its_first_job(tmp_path):
    """`start` spawns the worker while the driver still prepares (its imports then overlap the driver's); the
    first job goes to that very process."""
    executor = LocalExecutor(Settings(str(tmp_path / "store"), None), tmp_path / "logs")
    try:
        executor.start()
        worker = executor.worker
        assert worker is not None and worker.poll() is None  # running, no job given yet
        config = TrialConfig.from_dict({"dataset": {"kind": "digits"}, "architecture": "no_such_model"})
        executor.submit(Job("trial", "trial 0", config, "trials/0-x"))
        deadline, done = time.monotonic() + 120, []
        while not done and time.monotonic() < deadline:
            done = executor.wait(timeout=1)
        (completion,) = done
        assert completion.outcome is None and "no_such_model" in str(completion.reason)  # the job ran there
        assert executor.worker is worker and worker.poll() is None  # and the warm process stays for the next
    finally:
        executor.close()
