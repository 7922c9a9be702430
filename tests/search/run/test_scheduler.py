"""The driver's scheduling as a state machine (`search.run.scheduler`): pure, on real points and a real plan."""

import pytest

from search.planning.plan import build_plan
from search.records.tally import PendingPoint
from search.run.scheduler import Scheduler, Status
from tests.search.helpers import fixed_without, spec
from trainer.failures import FailureKind


def scheduler(max_attempts=2, max_trials=None, **changes):
    s = spec(**changes)
    pending = [PendingPoint(p, 1, None) for p in s.points]
    return Scheduler(pending, build_plan(s.points, s.fixed), max_attempts, max_trials, None)


def test_stems_start_first_and_their_points_wait_for_them():
    run = scheduler()  # four "1,p,1" points: one stem at epoch 1
    (stem,) = run.stems.values()
    ready = run.ready(10)
    assert ready == [stem]  # every point waits for the stem that trains its first epoch
    run.started_job(stem)
    assert run.ready(10) == [] and run.running() == 1
    run.stem_done(stem, [{"epoch": 1}])
    points = run.ready(10)
    assert len(points) == 4 and all(p.history == [{"epoch": 1}] for p in points)
    assert run.start_of(points[0]) == (stem.stem.folder, stem.stem.folder)


def test_a_stem_out_of_attempts_lets_its_points_start_from_scratch():
    run = scheduler()
    (stem,) = run.stems.values()
    for attempt in range(2):
        run.started_job(stem)
        assert run.stem_failed(stem, FailureKind.ERROR) == (attempt == 1)
    assert stem.status == Status.FAILED and len(run.ready(10)) == 4
    assert run.start_of(next(iter(run.points.values()))) == (None, None)


def test_a_stem_out_of_memory_on_a_shared_gpu_is_retried_on_a_whole_one_once():
    """Issue 35: the driver counted a stem's OOM against its attempts (points' did not), and retried it on the same
    fraction of a GPU."""
    run = scheduler()
    (stem,) = run.stems.values()
    run.started_job(stem)
    assert not run.stem_failed(stem, FailureKind.OOM)
    assert (stem.attempts, stem.whole_gpu, stem.status) == (0, True, Status.WAITING)
    run.started_job(stem)
    assert not run.stem_failed(stem, FailureKind.OOM.on_gpus(1.0))  # on a whole GPU: the stem's own error
    assert stem.attempts == 1
    for kind in (FailureKind.DISK_FULL, FailureKind.ERROR):
        run.started_job(stem)
        run.stem_failed(stem, kind)
    assert stem.attempts == 2 and stem.status == Status.FAILED


def test_out_of_memory_on_a_shared_gpu_uses_no_attempt_and_asks_for_a_whole_one():
    run = scheduler(fixed=fixed_without(), grid={"threshold": [0.5]})
    (state,) = run.points.values()
    run.started_job(state)
    assert run.failed(state, FailureKind.OOM, None, list)
    again = run.points[state.key]
    assert again is not state and again.status == Status.WAITING
    assert again.pending.attempt == 1 and again.pending.whole_gpu and again.tries == 0
    run.started_job(again)
    assert run.failed(again, FailureKind.ERROR, "trials/0-x", lambda: [{"epoch": 1}])
    last = run.points[state.key]
    assert last.pending.attempt == 2 and last.pending.previous == "trials/0-x" and last.previous_epochs == 1
    run.started_job(last)
    assert not run.failed(last, FailureKind.ERROR, None, list)  # out of attempts
    assert last.status == Status.ENDED and run.ready(10) == []


def test_max_trials_holds_new_points_but_not_those_that_continue():
    two_seeds = {"fixed": {**fixed_without(), "proxy_steps": "2"}, "grid": {"threshold": [0.5]}, "repeats": 2}
    run = scheduler(max_trials=1, **two_seeds)  # two baselines: no stem
    first, second = run.ready(10)
    first.number, run.started = 7, 1  # what the driver does when it opens a trial
    run.started_job(first)
    run.paused(first)
    assert run.ready(10) == [first] and second.status == Status.WAITING


def test_only_the_moves_a_run_makes_are_allowed():
    run = scheduler(fixed=fixed_without(), grid={"threshold": [0.5]})
    (state,) = run.points.values()
    with pytest.raises(RuntimeError, match="waiting -> waiting"):
        run.paused(state)  # it never ran
    run.started_job(state)
    run.ended(state)
    with pytest.raises(RuntimeError, match="ended -> running"):
        run.started_job(state)
