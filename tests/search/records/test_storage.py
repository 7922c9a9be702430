"""search.records.storage: the study database a finished command leaves whole in its `.db`, a hard link refused, a
locked
database named as locked by every reader."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import time

import pytest

from search.records.storage import DriverLock, StudyError, check_database_file, close_storages, open_storage
from search.records.study import GridStudy
from tests.search.helpers import search_cli, spec, write_space

METRICS = {"val_accuracy": 0.5, "val_accuracy_best": 0.5, "test_accuracy": 0.4, "epochs": 2, "images_seen": 40}


def states_in(db_file) -> dict[str, int]:
    """The trials' states as SQLite reads them from this file alone."""
    with sqlite3.connect(f"file:{db_file}?mode=ro", uri=True) as conn:
        return dict(conn.execute("SELECT state, count(*) FROM trials GROUP BY state").fetchall())


def test_closing_the_storages_leaves_the_whole_study_in_the_db_file(tmp_path):
    """Issue 42 item 2: a copy of the `.db` alone, made after the driver exits, showed a stale study."""
    grid = GridStudy.open(spec(repeats=3), f"sqlite:///{tmp_path}/s.db", tmp_path / "out")
    for pending in grid.pending():
        grid.finish(grid.start(pending), {**METRICS, "seed": pending.point.params["seed"]})
    close_storages()
    assert not (tmp_path / "s.db-wal").exists()
    (tmp_path / "copy").mkdir()
    shutil.copy(tmp_path / "s.db", tmp_path / "copy" / "s.db")
    assert states_in(tmp_path / "copy" / "s.db") == {"COMPLETE": 12}


@pytest.mark.slow
def test_a_finished_run_leaves_the_whole_study_in_its_db_file(tmp_path):
    """What a student backs up or mails is the `.db`: after `search run` exits, it alone is the study."""
    path = write_space(tmp_path / "s.yaml", grid={"threshold": [0.3, 0.6]}, fixed={**spec().data["fixed"]})
    done = search_cli("run", str(path), "--executor", "local", cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    db = tmp_path / "runs" / "tiny.db"
    assert not db.with_name("tiny.db-wal").exists()
    (tmp_path / "mailed").mkdir()
    shutil.copy(db, tmp_path / "mailed" / "tiny.db")
    assert states_in(tmp_path / "mailed" / "tiny.db") == {"COMPLETE": 2}
    status = search_cli("status", "--study", "tiny", "--storage", "sqlite:///mailed/tiny.db", cwd=tmp_path)
    assert status.returncode == 0 and "2 complete" in status.stdout, status.stdout + status.stderr


def test_a_database_with_a_hard_link_is_refused_to_a_driver(tmp_path):
    """Issue 42 item 4: a hard link has its own -wal and -shm, so it passed the driver lock and two drivers trained
    the same points."""
    grid = GridStudy.open(spec(), f"sqlite:///{tmp_path}/s.db", tmp_path / "out")
    close_storages()
    del grid
    os.link(tmp_path / "s.db", tmp_path / "linked.db")
    for name in ("s.db", "linked.db"):
        with pytest.raises(StudyError, match="has 2 hard links: SQLite takes each name for another database"):
            check_database_file(tmp_path / name)
        with pytest.raises(StudyError, match="hard links"):
            GridStudy.open(spec(), f"sqlite:///{tmp_path}/{name}", tmp_path / "out")
    assert open_storage(f"sqlite:///{tmp_path}/linked.db", create=False).get_all_studies()  # reading is fine


def test_the_driver_lock_of_a_symlinked_database_is_the_same_lock(tmp_path):
    sqlite3.connect(tmp_path / "s.db").close()
    os.symlink(tmp_path / "s.db", tmp_path / "alias.db")
    with DriverLock(f"sqlite:///{tmp_path}/s.db", "tiny"), pytest.raises(StudyError, match="another driver"):
        DriverLock(f"sqlite:///{tmp_path}/alias.db", "tiny").__enter__()


@pytest.mark.slow
def test_a_locked_database_is_called_locked_by_every_reader(tmp_path):
    """Issue 42 item 6: status, export and confirm --dry-run waited ~65 s, then said the locked database had no
    Optuna schema (advice that invites deleting a good study)."""
    GridStudy.open(spec(), f"sqlite:///{tmp_path}/s.db", tmp_path / "out")
    close_storages()
    code = (
        "import sqlite3, sys, time\nc = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "c.execute('PRAGMA locking_mode=EXCLUSIVE'); c.execute('BEGIN EXCLUSIVE')\n"
        "c.execute('UPDATE studies SET study_name = study_name'); print('held', flush=True); time.sleep(120)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "s.db")], stdout=subprocess.PIPE, text=True)
    storage = f"sqlite:///{tmp_path}/s.db"
    try:
        assert holder.stdout.readline().strip() == "held"
        for args in (
            ("status", "--study", "tiny"),
            ("export", "--study", "tiny"),
            ("confirm", "--study", "tiny", "--dry-run"),
        ):
            started = time.monotonic()
            done = search_cli(*args, "--storage", storage, cwd=tmp_path)
            assert done.returncode == 2, (args, done.stdout, done.stderr)
            assert f"is locked by another process for over 10 s (pid {holder.pid} (python" in done.stderr, done.stderr
            assert "schema" not in done.stderr and "Traceback" not in done.stderr
            assert time.monotonic() - started < 40, args
    finally:
        holder.kill()
        holder.wait()
