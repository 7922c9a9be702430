"""Exactly-once bookkeeping on a real SQLite study, and immunity to each known Optuna trap (FAIL counted as
done by GridSampler, zombies, nan, attrs after tell…)."""

import math
import sqlite3
import subprocess
import sys
import threading
import time

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

from search.planning.status import load_study
from search.records.paths import trial_folder
from search.records.record import result_tag
from search.records.storage import DriverLock, StudyError, creating, open_storage
from search.records.study import GridStudy
from tests.search.helpers import fixed_without, spec
from trainer.config import PROXY_METHODS
from trainer.files import atomic_write_json

METRICS = {"val_accuracy": 0.5, "test_accuracy": 0.4, "train_seconds": 1.0}


def open_study(tmp_path, **changes):
    return GridStudy.open(spec(**changes), f"sqlite:///{tmp_path}/s.db", tmp_path / "out")


def run_all(grid, value=0.5):
    for pending in grid.pending():
        number = grid.start(pending)
        assert grid.finish(number, {**METRICS, "val_accuracy": value}) is None


def states(grid):
    return [t.state for t in grid.study.get_trials(deepcopy=False)]


def test_failed_points_are_rerun_until_max_attempts(tmp_path):
    grid = open_study(tmp_path)
    assert len(grid.pending()) == 4
    first = grid.pending()[0]
    grid.fail(grid.start(first), "boom")
    again = [p for p in grid.pending() if p.point.grid_key == first.point.grid_key]
    assert again and again[0].attempt == 2  # unlike GridSampler, FAIL is not "done"
    grid.fail(grid.start(again[0]), "boom again")
    grid = open_study(tmp_path)
    assert first.point.grid_key not in {p.point.grid_key for p in grid.pending()}
    assert len(grid.pending()) == 3


def test_reordered_lists_are_the_same_grid(tmp_path):
    grid = open_study(tmp_path)
    run_all(grid)
    reordered = open_study(tmp_path, grid={"threshold": [0.6, 0.3], "cam_method": ["eigencam", "gradcam"]})
    assert reordered.pending() == []
    assert {p.grid_key for p in reordered.spec.points} == {p.grid_key for p in grid.spec.points}


def test_new_values_run_only_the_new_points(tmp_path):
    run_all(open_study(tmp_path))
    grid = open_study(tmp_path, grid={"cam_method": ["gradcam", "eigencam", "layercam"], "threshold": [0.3, 0.6, 0.9]})
    pending = grid.pending()
    assert len(pending) == 9 - 4
    assert all(p.point.params["cam_method"] == "layercam" or p.point.params["threshold"] == 0.9 for p in pending)
    run_all(grid)  # new categorical value and a wider float range are accepted by the same study
    assert states(grid).count(TrialState.COMPLETE) == 9


def test_an_open_set_categorical_cannot_grow_and_says_why(tmp_path):
    fixed = fixed_without("architecture")
    run_all(open_study(tmp_path, fixed=fixed, grid={"architecture": ["test_resnet"], "threshold": [0.5]}))
    with pytest.raises(StudyError, match=r"axis architecture gains \['test_efficientnet'\].*--study NEW_NAME"):
        open_study(
            tmp_path, fixed=fixed, grid={"architecture": ["test_resnet", "test_efficientnet"], "threshold": [0.5]}
        )


def test_incompatible_changes_are_refused(tmp_path):
    run_all(open_study(tmp_path))
    with pytest.raises(StudyError, match="different fixed"):
        open_study(tmp_path, fixed={**fixed_without("image_size"), "image_size": 96})
    with pytest.raises(StudyError, match="removes 2 of its points"):
        open_study(tmp_path, grid={"cam_method": ["gradcam"], "threshold": [0.3, 0.6]})


def test_nan_objective_ends_fail_with_a_reason_not_running(tmp_path):
    grid = open_study(tmp_path)
    number = grid.start(grid.pending()[0])
    reason = grid.finish(number, {**METRICS, "val_accuracy": math.nan})
    trial = grid.study.get_trials(deepcopy=False)[number]
    assert trial.state == TrialState.FAIL and "not a finite number" in reason
    assert trial.user_attrs["fail_reason"] == reason
    assert TrialState.RUNNING not in states(grid)


def test_metrics_are_stored_before_tell_and_the_last_point_completes(tmp_path):
    grid = open_study(tmp_path)
    run_all(grid, value=0.75)
    trials = grid.study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4  # no RuntimeError at the grid's end
    assert all(t.user_attrs["test_accuracy"] == 0.4 and t.value == 0.75 for t in trials)
    assert grid.pending() == []


def test_params_are_real_optuna_params(tmp_path):
    grid = open_study(tmp_path)
    run_all(grid)
    trial = grid.study.get_trials(deepcopy=False)[0]
    assert isinstance(trial.distributions["threshold"], FloatDistribution)
    assert trial.distributions["cam_method"] == CategoricalDistribution(PROXY_METHODS)
    assert set(trial.params) == {"cam_method", "threshold"}  # the seed is a repeat, not a hyperparameter (issue 24)
    assert trial.user_attrs["seed"] in (0, 1)
    frame = grid.study.trials_dataframe()
    assert {"params_threshold", "params_cam_method", "user_attrs_grid_key"} <= set(frame.columns)


def test_reconcile_completes_finished_orphans_and_fails_the_rest(tmp_path):
    grid = open_study(tmp_path)
    a, b = grid.pending()[:2]
    na, nb = grid.start(a), grid.start(b)
    atomic_write_json(tmp_path / "out" / trial_folder(na, a.point.grid_key) / "result.json", own_result(na, a))
    grid = open_study(tmp_path)  # a new driver after a crash
    assert grid.reconcile() == (1, 1)
    trials = grid.study.get_trials(deepcopy=False)
    assert trials[na].state == TrialState.COMPLETE and trials[na].user_attrs["val_accuracy"] == 0.5
    assert trials[nb].state == TrialState.FAIL and trials[nb].user_attrs["fail_kind"] == "orphaned"
    retry = next(p for p in grid.pending() if p.point.grid_key == b.point.grid_key)
    assert retry.attempt == 1  # an orphan does not use up an attempt
    assert retry.previous is None  # it left no checkpoint: nothing to resume from
    orphan_dir = tmp_path / "out" / trial_folder(nb, b.point.grid_key)
    orphan_dir.mkdir(parents=True)
    (orphan_dir / "checkpoint.pt").write_bytes(b"epoch 1")
    retry = next(p for p in grid.pending() if p.point.grid_key == b.point.grid_key)
    assert retry.previous == trial_folder(nb, b.point.grid_key)  # the store folder it resumes from


def own_result(number, pending, metrics=METRICS) -> dict:
    """A result.json as trial `number` of `pending`'s point writes it."""
    return {
        "metrics": metrics,
        "config_digest": pending.point.config().digest(),
        "tag": result_tag(number, pending.point.grid_key),
    }


def test_reconcile_refuses_a_result_copied_from_another_trial(tmp_path):
    """Hostile pass, item 5: trial 0's result.json (edited to 0.99) copied into trial 1's folder is not taken."""
    grid = open_study(tmp_path)
    a, b = grid.pending()[:2]
    na, nb = grid.start(a), grid.start(b)
    forged = own_result(na, a, {**METRICS, "val_accuracy": 0.99})
    for number, pending, result in (
        (nb, b, forged),  # another point's result
        (na, a, {**own_result(na, a), "tag": result_tag(nb, a.point.grid_key)}),  # this point's, another trial's
    ):
        atomic_write_json(tmp_path / "out" / trial_folder(number, pending.point.grid_key) / "result.json", result)
    grid = open_study(tmp_path)
    assert grid.reconcile() == (0, 2)
    trials = grid.study.get_trials(deepcopy=False)
    for number in (na, nb):
        assert trials[number].state == TrialState.FAIL
        assert "not its own" in trials[number].user_attrs["fail_reason"]
        assert trials[number].user_attrs["fail_kind"] == "orphaned"  # rerun, no attempt used
    assert {p.point.grid_key for p in grid.pending()} >= {a.point.grid_key, b.point.grid_key}


def test_sqlite_is_in_wal_mode(tmp_path):
    open_study(tmp_path)
    with sqlite3.connect(tmp_path / "s.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_second_driver_is_refused_and_a_dead_ones_lock_is_not_stale(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys, time; from pathlib import Path; from search.records.storage import DriverLock\n"
                f"with DriverLock('sqlite:///{tmp_path}/s.db', 'tiny'):\n    print('held', flush=True); time.sleep(60)"
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    with (
        pytest.raises(StudyError, match=rf"another driver is running this study \(pid {holder.pid}"),
        DriverLock(f"sqlite:///{tmp_path}/s.db", "tiny"),
    ):
        pass
    holder.kill()
    holder.wait()
    with DriverLock(f"sqlite:///{tmp_path}/s.db", "tiny"):
        pass


def test_study_direction_and_space_are_stored(tmp_path):
    grid = open_study(tmp_path)
    loaded = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path}/s.db")
    assert loaded.direction == optuna.study.StudyDirection.MAXIMIZE
    assert loaded.user_attrs["space"] == grid.spec.to_data() and loaded.user_attrs["spec_hash"] == grid.spec.digest()


def in_thread(fn):
    out = []
    thread = threading.Thread(target=lambda: out.append(fn()))
    thread.start()
    time.sleep(0.5)
    assert thread.is_alive() and not out  # waiting, not failing
    return thread, out


def test_a_reader_waits_for_a_starting_driver_to_create_the_schema(tmp_path):
    url, path = f"sqlite:///{tmp_path}/s.db", tmp_path / "s.db"
    sqlite3.connect(path).close()  # the file exists, its tables do not yet
    with creating(url):
        reader, opened = in_thread(lambda: open_storage(url, create=False))
        optuna.storages.RDBStorage(url)  # the driver makes the schema, then lets go
    reader.join(timeout=30)
    assert len(opened) == 1


def test_a_reader_waits_for_a_starting_driver_to_store_the_space(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    with creating(url):
        study = optuna.create_study(study_name="s", storage=open_storage(url, create=True))
        reader, loaded = in_thread(lambda: load_study("s", url))
        study.set_user_attr("space", {"grid": {}})
    reader.join(timeout=30)
    assert loaded[0].user_attrs["space"] == {"grid": {}}


def test_a_reader_refuses_a_database_without_optunas_schema_and_leaves_it_alone(tmp_path):
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE notes (x)")
    before = path.read_bytes()
    with pytest.raises(StudyError, match="no Optuna schema"):
        open_storage(f"sqlite:///{path}", create=False)
    assert path.read_bytes() == before and not (tmp_path / "other.db.init-lock").exists()


def test_the_objective_has_its_metric_s_name(tmp_path):
    """Issue 24: optuna-dashboard labelled the objective "Objective 0"."""
    open_study(tmp_path)
    loaded = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path}/s.db")
    assert loaded.metric_names == ["val_accuracy"]


def test_optuna_s_tools_see_why_a_try_was_stopped(tmp_path):
    """Item 9: an interrupted try is FAIL in Optuna but INTERRUPTED in the export; the reason was only a user attr
    of ours. It is now where Optuna itself keeps a failed trial's reason (its `fail_reason` system attr)."""
    from search.records.study import GridStudy
    from tests.search.helpers import spec
    from trainer.failures import FailureKind

    grid = GridStudy.open(spec(), f"sqlite:///{tmp_path}/s.db", tmp_path / "out")
    number = grid.start(grid.pending()[0])
    grid.fail(number, "interrupted: the driver was stopped", FailureKind.INTERRUPTED)
    (trial,) = grid.study.get_trials(deepcopy=False)
    assert trial.system_attrs["fail_reason"] == "interrupted: the driver was stopped"
