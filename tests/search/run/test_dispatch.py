"""The local executor's warm worker, started before the first job."""

import time

from search.run.dispatch import LocalExecutor
from search.run.worker import Job, JobKind, Settings
from trainer.config import TrialConfig


def a_failing_job(executor: LocalExecutor):
    """Submit a job whose model does not exist (it fails at once, wherever it runs) and return its completion."""
    config = TrialConfig.from_dict({"dataset": {"kind": "digits"}, "architecture": "no_such_model"})
    executor.submit(Job(JobKind.TRIAL, "trial 0", config, "trials/0-x"))
    deadline, done = time.monotonic() + 120, []
    while not done and time.monotonic() < deadline:
        done = executor.wait(timeout=1)
    (completion,) = done
    return completion


def test_the_local_worker_started_with_the_run_serves_its_first_job(tmp_path):
    """`start` spawns the worker while the driver still prepares (its imports then overlap the driver's); the
    first job goes to that very process."""
    executor = LocalExecutor(Settings(str(tmp_path / "store"), None), tmp_path / "logs")
    try:
        executor.start()
        worker = executor.worker
        assert worker is not None and worker.poll() is None  # running, no job given yet
        completion = a_failing_job(executor)
        assert completion.outcome is None and "no_such_model" in str(completion.reason)  # the job ran there
        assert executor.worker is worker and worker.poll() is None  # and the warm process stays for the next
    finally:
        executor.close()


def test_the_local_worker_never_imports_a_search_folder_of_the_working_directory(tmp_path, monkeypatch):
    """Issue 42 item 5: started as `python -m search.run.worker`, the worker put the current directory first on its
    path and ran a `search/` package found where the user typed the command."""
    planted = tmp_path / "project" / "search"
    planted.mkdir(parents=True)
    marker = tmp_path / "imported"
    for name in ("__init__.py", "worker.py"):
        (planted / name).write_text(f"import os\nopen({str(marker)!r}, 'a').write(str(os.getpid()))\n")
    monkeypatch.chdir(planted.parent)
    executor = LocalExecutor(Settings(str(tmp_path / "store"), None), tmp_path / "logs")
    try:
        assert "no_such_model" in str(a_failing_job(executor).reason)  # the installed worker ran the job
    finally:
        executor.close()
    assert not marker.exists()
