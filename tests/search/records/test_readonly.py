"""Read-only commands on a supervisor's read-only copy of a study: status, export and report read it without
writing anything beside the database (no -wal, no -shm) and without touching runs/."""

import json
import shutil
import subprocess
import sys
import uuid

import optuna
import pytest

from search.records.storage import close_storages
from search.records.study import GridStudy
from tests.search.helpers import spec

pytestmark = pytest.mark.slow  # the quick tier is `pytest -m 'not slow'`

METRICS = {"val_accuracy": 0.5, "val_accuracy_best": 0.5, "test_accuracy": 0.4, "epochs": 2, "images_seen": 40}


@pytest.fixture
def read_only_copy(tmp_path):
    """A finished study copied onto a tmpfs that is then remounted read-only."""
    grid = GridStudy.open(
        spec(repeats=3, baselines=[{"proxy_steps": "2"}]), f"sqlite:///{tmp_path}/s.db", tmp_path / "out"
    )
    for pending in grid.pending():
        grid.finish(grid.start(pending), {**METRICS, "seed": pending.point.params["seed"]})
    close_storages()  # what every command does as it exits: the `.db` alone is the study
    mount = tmp_path / f"ro-{uuid.uuid4().hex[:6]}"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {made.stderr.decode().strip()}")
    shutil.copy(tmp_path / "s.db", mount / "s.db")
    subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_read_only_commands_read_a_read_only_copy(tmp_path, read_only_copy):
    work = tmp_path / "work"
    work.mkdir()
    storage = f"sqlite:///{read_only_copy}/s.db"

    def search(*args):
        return subprocess.run(
            [sys.executable, "-m", "search", *args], cwd=work, capture_output=True, text=True, timeout=300
        )

    status = search("status", "--study", "tiny", "--storage", storage, "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["complete"] == 15
    export = search("export", "--study", "tiny", "--storage", storage, "--out", str(tmp_path / "trials.csv"))
    assert export.returncode == 0 and "15 trials" in export.stdout, export.stderr
    report = search("report", "--study", "tiny", "--storage", storage, "--out", str(tmp_path / "report"))
    assert report.returncode == 0, report.stderr
    assert sorted(p.name for p in read_only_copy.iterdir()) == ["s.db"]  # nothing written beside it
    assert list(work.iterdir()) == []  # and no runs/ folder made where the commands ran


def test_readers_of_a_live_folder_open_sqlite_read_only(tmp_path):
    grid = GridStudy.open(spec(), f"sqlite:///{tmp_path}/s.db", tmp_path / "out")
    grid.finish(grid.start(grid.pending()[0]), METRICS)
    from search.records.storage import open_storage

    reader = open_storage(f"sqlite:///{tmp_path}/s.db", create=False)
    study_id = reader.get_all_studies()[0]._study_id
    with pytest.raises(optuna.exceptions.StorageInternalError) as refused:
        reader.set_study_user_attr(study_id, "written", True)
    causes, cause = [], refused.value
    while cause is not None:
        causes.append(str(cause))
        cause = cause.__cause__ or cause.__context__
    assert any("readonly database" in c for c in causes), causes
