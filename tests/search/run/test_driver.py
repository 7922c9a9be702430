"""The driver's logic (`search.run.driver.Run`) in this process, on a real SQLite study and a real artifact store,
with a scripted executor in place of Ray or the local worker: what is submitted, what a completion, a failure, an
out-of-memory on a shared GPU and a stop do to the study. No process starts, no model trains: the subprocess tests
(`test_run.py`, `test_resume.py`, `tests/faults/`) keep only what needs a process."""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest
from optuna.trial import TrialState
from rich.console import Console

from search.planning.options import RunFlags, resolve
from search.records.store import ArtifactStore
from search.records.study import GridStudy
from search.run import driver
from search.run.dispatch import Completion
from search.run.driver import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, Run
from search.run.worker import Job, Outcome, OutcomeStatus
from tests.search.helpers import spec
from trainer.failures import FailureKind

Script = Callable[[Job, int], Completion]


class ScriptedExecutor:
    """An executor whose jobs end as `script(job, try_number)` says, at once: the driver's only view of a run."""

    def __init__(self, script: Script, slots: int = 2) -> None:
        self.script, self.slots = script, slots
        self.submitted: list[Job] = []
        self.waiting: list[Job] = []
        self.tries: dict[str, int] = {}

    def start(self) -> None:
        pass

    def submit(self, job: Job) -> None:
        self.submitted.append(job)
        self.waiting.append(job)

    def wait(self, timeout: float) -> list[Completion]:
        done, self.waiting = self.waiting, []
        out = []
        for job in done:
            key = str(job.grid_key)
            self.tries[key] = self.tries.get(key, 0) + 1
            out.append(self.script(job, self.tries[key]))
        return out

    def cancel_all(self) -> None:
        self.waiting = []

    def close(self) -> None:
        pass


def complete(job: Job, _: int) -> Completion:
    """Every job completes, its objective a function of its settings (so a table of them can be checked)."""
    value = 0.5 + job.config.threshold / 10
    history = [{"epoch": 1, "val_accuracy": value - 0.1}, {"epoch": 2, "val_accuracy": value}]
    metrics = {"val_accuracy": value, "val_accuracy_best": value, "test_accuracy": value - 0.05, "epochs": 2}
    return Completion(job, outcome=Outcome(OutcomeStatus.COMPLETE, metrics, history, node="scripted"))


def drive(tmp_path, script: Script, **changes) -> tuple[int, GridStudy, ScriptedExecutor]:
    """A run of a tiny grid (no shared stems) driven by `script`; returns its exit code, the study and the executor."""
    s = spec(grid={"threshold": [0.3, 0.6, 0.9]}, **changes)
    options = resolve(s, RunFlags(f"sqlite:///{tmp_path}/s.db", tmp_path / "out", executor="local", share=False))
    store = ArtifactStore(str(tmp_path / "store"))
    grid = GridStudy.open(s, options.storage, options.out_dir, store)
    executor = ScriptedExecutor(script)
    code = Run(grid, executor, Console(file=io.StringIO()), options).drive()
    return code, grid, executor


@pytest.fixture(autouse=True)
def _no_poll_wait(monkeypatch):
    monkeypatch.setattr(driver, "POLL_SECONDS", 0.0)
    driver._STOP.clear()
    yield
    driver._STOP.clear()  # a stop requested here must not reach another test in this process


def test_every_point_is_submitted_once_and_completed_once(tmp_path):
    code, grid, executor = drive(tmp_path, complete)
    assert code == EXIT_OK
    trials = grid.trials()
    assert len(trials) == len(grid.spec.points) == len(executor.submitted)
    assert {t.state for t in trials} == {TrialState.COMPLETE}
    assert sorted(t.user_attrs["grid_key"] for t in trials) == sorted(p.grid_key for p in grid.spec.points)
    assert all(t.intermediate_values == {1: t.value - 0.1, 2: t.value} for t in trials)  # every epoch reported
    assert {t.user_attrs["ray_node"] for t in trials} == {"scripted"}  # where it ran, beside what it measured
    again = Run(grid, ScriptedExecutor(complete), Console(file=io.StringIO()), grid_options(tmp_path, grid))
    assert not again.points  # run again: nothing left, nothing redone


def grid_options(tmp_path, grid: GridStudy):
    return resolve(grid.spec, RunFlags(f"sqlite:///{tmp_path}/s.db", tmp_path / "out", executor="local", share=False))


def test_a_failing_point_uses_its_attempts_then_is_given_up_and_the_rest_go_on(tmp_path):
    def script(job: Job, tries: int) -> Completion:
        if job.config.threshold == 0.6:
            return Completion.failed(job, "RuntimeError: boom")
        return complete(job, tries)

    code, grid, _ = drive(tmp_path, script, max_attempts=2)
    assert code == EXIT_FAILED
    failed = [t for t in grid.trials() if t.state == TrialState.FAIL]
    assert len(failed) == 2 * len(grid.spec.seeds)  # two attempts per seed of the failing point, no more
    assert {t.user_attrs["fail_reason"] for t in failed} == {"RuntimeError: boom"}
    assert sum(t.state == TrialState.COMPLETE for t in grid.trials()) == len(grid.spec.points) - len(grid.spec.seeds)


def test_out_of_memory_on_a_shared_gpu_is_retried_on_a_whole_one_without_using_an_attempt(tmp_path):
    def script(job: Job, tries: int) -> Completion:
        if tries == 1 and job.config.threshold == 0.3:
            return Completion.failed(job.with_gpus(0.5), "OutOfMemoryError: CUDA out of memory", FailureKind.OOM)
        return complete(job, tries)

    code, grid, executor = drive(tmp_path, script, max_attempts=1)
    assert code == EXIT_OK  # one attempt each, and the out-of-memory tries did not spend it
    retried = [j for j in executor.submitted if j.config.threshold == 0.3]
    seeds = len(grid.spec.seeds)
    assert [j.with_gpus(0.5).gpus for j in retried] == [0.5] * seeds + [1.0] * seeds  # the retry: a whole GPU
    oom = [t for t in grid.trials() if t.state == TrialState.FAIL]
    assert {t.user_attrs["fail_kind"] for t in oom} == {"oom"}


def test_a_stop_request_ends_the_run_with_every_running_trial_recorded(tmp_path):
    def script(job: Job, tries: int) -> Completion:
        driver._request_stop(15, None)  # SIGTERM arrives while the first jobs run
        return complete(job, tries)

    code, grid, executor = drive(tmp_path, script)
    assert code == EXIT_INTERRUPTED
    assert not [t for t in grid.trials() if t.state == TrialState.RUNNING]  # nothing left RUNNING
    assert len(executor.submitted) < len(grid.spec.points)  # nothing new started after the stop
