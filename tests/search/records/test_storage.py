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
from tests.search.helpers import SEARCH, hold_lock, refused, search_cli, space, spec, write_space

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
    path = write_space(tmp_path / "s.yaml", grid={"threshold": [0.3, 0.6]}, fixed={**spec().fixed})
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
        started = time.monotonic()
        readers = {  # together: each waits out the 10 s at once
            args: subprocess.Popen(
                [*SEARCH, *args, "--storage", storage], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            for args in (
                ("status", "--study", "tiny"),
                ("export", "--study", "tiny"),
                ("confirm", "--study", "tiny", "--dry-run"),
            )
        }
        for args, reader in readers.items():
            out, err = (text.decode() for text in reader.communicate(timeout=120))
            assert reader.returncode == 2, (args, out, err)
            assert f"is locked by another process for over 10 s (pid {holder.pid} (python" in err, err
            assert "schema" not in err and "Traceback" not in err
        assert time.monotonic() - started < 60
    finally:
        holder.kill()
        holder.wait()


def test_a_second_driver_with_another_out_is_refused(tmp_path):
    """Item 1: `--out runs/A` and `--out runs/B` of one study were two drivers, every point COMPLETE twice."""
    path = write_space(tmp_path / "two.yaml")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; from search.records.storage import DriverLock\n"
            "with DriverLock('sqlite:///runs/tiny.db', 'tiny'):\n    print('held', flush=True); time.sleep(60)",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        done = search_cli("run", str(path), "--out", "runs/B", "--executor", "local", cwd=tmp_path)
        refused(done, f"another driver is running this study (pid {holder.pid}")
    finally:
        holder.kill()
        holder.wait()
    assert not (tmp_path / "runs" / "B").exists()


def test_another_application_s_database_is_never_written(tmp_path):
    """Item 10: 13 Optuna tables were added to a DB holding `customers`, and it was switched to WAL."""
    db = tmp_path / "shop.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER, name TEXT)")
    before = db.read_bytes()
    done = search_cli("run", str(write_space(tmp_path / "s.yaml")), "--storage", f"sqlite:///{db}", cwd=tmp_path)
    refused(done, "holds another application's tables (customers)")
    assert db.read_bytes() == before


@pytest.mark.slow
def test_a_locked_database_is_named_with_its_holder(tmp_path):
    """Item 15: a DB held by `BEGIN EXCLUSIVE` made `run` wait 120 s, then print a traceback."""
    db = tmp_path / "s.db"
    sqlite3.connect(db).close()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import sqlite3, time\nc = sqlite3.connect({str(db)!r}, isolation_level=None)\n"
            "c.execute('BEGIN EXCLUSIVE'); print('held', flush=True); time.sleep(120)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        done = search_cli("run", str(write_space(tmp_path / "s.yaml")), "--storage", f"sqlite:///{db}", cwd=tmp_path)
        refused(done, f"is locked by another process for over 10 s (pid {holder.pid} (python")
        assert time.monotonic() - started < 60
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.slow
def test_a_truncated_database_is_called_damaged(tmp_path):
    """Item 19: `run` on a truncated DB printed "database disk image is malformed" with a traceback; `status`
    blamed a missing schema."""
    path = write_space(tmp_path / "s.yaml", grid={"threshold": [0.3]}, fixed={**space()["fixed"], "proxy_steps": "1"})
    assert search_cli("run", str(path), "--executor", "local", cwd=tmp_path, timeout=300).returncode == 0
    db = tmp_path / "runs" / "tiny.db"
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = db.read_bytes()
    db.write_bytes(data[: len(data) // 2])
    for args in (["run", str(path), "--executor", "local"], ["status", "--study", "tiny"]):
        done = search_cli(*args, cwd=tmp_path)
        refused(done, "is damaged")
        assert ".recover" in done.stderr and "--study NEW_NAME" in done.stderr


@pytest.mark.parametrize(
    "spelling",
    ["sqlite:///link.db", "sqlite:///runs/tiny.db?timeout=30", "sqlite:///runs/../runs/./tiny.db", "absolute"],
)
def test_a_second_driver_is_refused_under_every_spelling_of_one_database(tmp_path, spelling):
    """Item 1: a symlink to the database, or a query string, got a second driver past the lock (every point
    COMPLETE twice), and `?timeout=30` made a stray file named `tiny.db?timeout=30`."""
    path = write_space(tmp_path / "s.yaml")
    (tmp_path / "runs").mkdir()
    (tmp_path / "link.db").symlink_to(tmp_path / "runs" / "tiny.db")
    if spelling == "absolute":
        spelling = f"sqlite:///{tmp_path}/runs/tiny.db"
    holder = hold_lock(tmp_path, "sqlite:///runs/tiny.db")
    try:
        done = search_cli("run", str(path), "--storage", spelling, "--executor", "local", cwd=tmp_path)
        refused(done, f"another driver is running this study (pid {holder.pid}")
    finally:
        holder.kill()
        holder.wait()
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["tiny.db.tiny.driver-lock"]


def test_a_storage_url_is_read_as_sqlalchemy_reads_it(tmp_path):
    """Item 1: the query string is not part of the file's name; an SQLite URI filename is refused."""
    from search.records.storage import DriverLock, StudyError, check_storage_url

    first = DriverLock("sqlite:///runs/a.db?timeout=30", "a").path
    assert first == DriverLock("sqlite:///runs/a.db", "a").path
    assert "?" not in str(first)
    with pytest.raises(StudyError, match="URI filenames"):
        check_storage_url("sqlite:///file:runs/a.db?uri=true")
    with pytest.raises(StudyError, match="in-memory"):
        check_storage_url("sqlite://")
