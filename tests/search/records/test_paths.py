"""`search.records.paths`: the one owner of the paths a study's files live at, and the names it refuses to make a path
of."""

import ast
import pathlib

import pytest
from typer.testing import CliRunner

from cli import app
from search.records.paths import (
    dataset_manifest,
    default_storage,
    run_dir,
    stem_folder,
    study_db,
    study_dbs,
    trial_folder,
)
from search.records.storage import StudyError

ROOT = pathlib.Path(__file__).resolve().parents[3]


def test_every_path_of_a_study_is_built_here():
    assert study_db("mine") == pathlib.Path("runs/mine.db")
    assert default_storage("mine") == "sqlite:///runs/mine.db"
    assert run_dir("mine") == pathlib.Path("runs/mine")
    assert run_dir("mine", pathlib.Path("/x/runs")) == pathlib.Path("/x/runs/mine")
    assert trial_folder(12, "ab12cd34ef") == "trials/12-ab12cd34"
    assert stem_folder("k1") == "stems/k1"
    assert dataset_manifest("digits", "d1") == "datasets/digits-d1.json"


@pytest.mark.parametrize("name", ["../up", "a/b", "", ".hidden", "x" * 101, "a b"])
def test_a_name_that_is_not_plain_never_becomes_a_path(name):
    for build in (study_db, default_storage, run_dir):
        with pytest.raises(StudyError):
            build(name)


def test_the_databases_of_a_folder_are_listed_sorted(tmp_path):
    for name in ("b", "a"):
        (tmp_path / f"{name}.db").touch()
    (tmp_path / "a").mkdir()  # a run folder is no database
    assert study_dbs(tmp_path) == [tmp_path / "a.db", tmp_path / "b.db"]


def test_no_store_or_study_path_is_built_outside_the_owner():
    """The literals that make a study's paths appear only in `search/records/paths.py` (and the trainer's own file
    names in
    `trainer/folder.py`)."""
    literals = ("trials/", "stems/", "datasets/", "outcome.json", ".db", "runs/")
    found = []
    for package in ("search", "cli", "results", "analysis"):
        for path in (ROOT / package).rglob("*.py"):
            if path.name == "paths.py":
                continue
            tree = ast.parse(path.read_text())
            docstrings = {
                id(node.body[0].value)
                for node in ast.walk(tree)
                if isinstance(node, ast.Module | ast.FunctionDef | ast.ClassDef | ast.AsyncFunctionDef)
                and node.body
                and isinstance(node.body[0], ast.Expr)
            }
            for node in ast.walk(tree):
                text = node.value if isinstance(node, ast.Constant) and id(node) not in docstrings else None
                if isinstance(text, str) and (text.startswith(literals) or text.endswith((".db", "outcome.json"))):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {text!r}")
    assert not found, found


def test_every_command_says_no_in_one_line_through_one_handler(tmp_path, monkeypatch):
    """A study name that cannot be a path, a study that is not there: `cli.errors.SaysNo` turns the refusal into
    one `error:` line and exit 2, whichever command raised it."""
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    for args in (["export", "--study", "../up"], ["status", "--study", "missing"], ["resume", "--study", "a/b"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert result.output.startswith("error: ") and len(result.output.strip().splitlines()) == 1, result.output
    assert not (tmp_path / "runs").exists()  # nothing made on the way to no
