"""A corpus of malformed spaces, one file each under bad_spaces/ (first line: `# expect: <message>`): every one is
refused with exit 2 and its message, with no traceback, and nothing is created."""

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app

CORPUS = sorted((Path(__file__).parent / "bad_spaces").glob("*.yaml"))


def expected(path: Path) -> str:
    first = path.read_text().splitlines()[0] if path.read_text() else ""
    return first.removeprefix("# expect: ") if first.startswith("# expect: ") else path.name


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_malformed_space_is_refused(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["run", str(path), "--executor", "local"])
    assert result.exit_code == 2, result.output
    assert expected(path) in result.output
    assert "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []  # no DB, no folder


def test_corpus_is_large_enough():
    assert len(CORPUS) >= 25


def test_every_problem_is_reported_at_once(tmp_path):
    space = tmp_path / "many.yaml"
    space.write_text("repeats: 0\ndatasets:\n  d: {kind: digits}\ngrid:\n  threshold: [2]\n  colour: [red]\n")
    result = CliRunner().invoke(app, ["run", str(space)])
    assert result.exit_code == 2
    for message in ("repeats: expected a positive integer", "grid.colour: unknown axis"):
        assert message in result.output


def test_real_process_prints_no_traceback(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "search", "run", str(CORPUS[20])],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith("error: ") and expected(CORPUS[20]) in done.stderr
    assert list(tmp_path.iterdir()) == []
