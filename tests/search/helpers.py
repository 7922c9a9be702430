"""Small spaces for orchestrator tests: real digits, tiny models, trials of a second or two."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml
from optuna.trial import TrialState

from search.space.grid import GridSpec
from search.space.parse import parse_space
from tests.conftest import write_digit_folder
from tests.tiny import TINY_SPACE, tiny_space

BASE = TINY_SPACE
space = tiny_space  # BASE with top-level keys replaced (`grid=`, `fixed=`…); None removes a key


def fixed_without(*keys: str) -> dict:
    """BASE's fixed: minus `keys` (to make one of them an axis)."""
    return {k: v for k, v in BASE["fixed"].items() if k not in keys}


def spec(**changes) -> GridSpec:
    return parse_space(space(**changes), Path("test.yaml"))


def write_space(path: Path, **changes) -> Path:
    path.write_text(yaml.safe_dump(space(**changes)))
    return path


def start_driver(space_file: Path, cwd: Path, executor: str = "local", *extra: str) -> subprocess.Popen:
    """`search run SPACE --executor EXECUTOR` in a subprocess (stdout and stderr together, as text)."""
    return subprocess.Popen(
        [sys.executable, "-m", "search", "run", str(space_file), "--executor", executor, *extra],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def python_process(code: str) -> subprocess.Popen:
    """`python -c CODE` in its own session (a process group a test can kill whole), its stdout readable as text."""
    return subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )


def search_cli(*args: str, cwd: Path, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """`search ARGS` in a subprocess, as a user runs it (stdout and stderr apart, as text)."""
    return subprocess.run(
        [sys.executable, "-m", "search", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env
    )


def mounted_tmpfs(folder: Path, options: str):
    """Mount a tmpfs with `options` (`size=16m`, `ro,size=1m`) on `folder` (made here), yield it, unmount it; skip
    the test where mounting needs root and this is not."""

    folder.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {made.stderr.decode().strip()}")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


def trials(cwd: Path, name: str = "tiny") -> list:
    """The trials of the study under `cwd/runs/`, [] while it does not exist."""
    from search.planning.status import load_study
    from search.records.storage import StudyError

    try:
        return load_study(name, f"sqlite:///{cwd}/runs/{name}.db").get_trials(deepcopy=False)
    except StudyError:
        return []


def wait_for_complete(cwd: Path, count: int, process: subprocess.Popen, timeout: float = 240) -> list:
    """Wait until the study has `count` COMPLETE trials (failing if the driver exits first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = [t for t in trials(cwd) if t.state == TrialState.COMPLETE]
        if len(done) >= count:
            return done
        assert process.poll() is None, process.stdout.read()
        time.sleep(0.2)
    raise AssertionError("no progress")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_each_point_complete_once(cwd: Path, points: int) -> dict[int, float]:
    """Every point COMPLETE exactly once, nothing RUNNING; returns {trial number: value} of the COMPLETE ones."""
    all_trials = trials(cwd)
    complete = Counter(t.user_attrs["grid_key"] for t in all_trials if t.state == TrialState.COMPLETE)
    assert len(complete) == points and set(complete.values()) == {1}, complete
    assert not [t for t in all_trials if t.state == TrialState.RUNNING]
    return {t.number: t.value for t in all_trials if t.state == TrialState.COMPLETE}


def assert_orphans_resumed(cwd: Path) -> int:
    """Every COMPLETE trial whose point had earlier tries that left a checkpoint resumed from one (its trial.log
    says so); returns how many did."""
    folder = cwd / "runs" / "tiny" / "trials"
    all_trials = trials(cwd)
    resumed = 0
    for done in [t for t in all_trials if t.state == TrialState.COMPLETE]:
        key = done.user_attrs["grid_key"]
        earlier = [t for t in all_trials if t.user_attrs["grid_key"] == key and t.number < done.number]
        if any((folder / f"{t.number}-{key[:8]}" / "checkpoint.pt").exists() for t in earlier):
            assert "resuming after epoch" in (folder / f"{done.number}-{key[:8]}" / "trial.log").read_text(), key
            resumed += 1
    return resumed


def finished_study(spec: GridSpec, storage: str, out: Path, value=lambda params: 0.5):
    """Every point of `spec` recorded COMPLETE through the driver's own path (`GridStudy.finish`), its objective
    `value(params)`, without training: for tests of what reads a finished study. Returns the `GridStudy`."""
    from search.records.storage import close_storages
    from search.records.study import GridStudy

    grid = GridStudy.open(spec, storage, out)
    for pending in grid.pending():
        params = pending.point.params
        score = value(params)
        metrics = {
            "val_accuracy": score,
            "val_accuracy_best": score,
            "test_accuracy": score,
            "epochs": 2,
            "num_classes": 10,
        }
        grid.finish(grid.start(pending), {**metrics, "images_seen": 40, "seed": params["seed"]})
    close_storages()
    return grid


SEARCH = [sys.executable, "-m", "search"]


def refused(done: subprocess.CompletedProcess, message: str) -> None:
    """Exit 2, one `error:` line holding `message`, no traceback."""
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and done.stderr.count("\n") <= 2, done.stderr


def folder_space(tmp_path: Path, **changes) -> Path:
    """A one-point space on a digit image folder (`imgs/`), 1 epoch, no proxy step."""
    write_digit_folder(tmp_path / "imgs", classes=3, per_class=20)
    data = space(datasets={"f": {"kind": "imagefolder", "root": str(tmp_path / "imgs")}}, grid={"threshold": [0.3]})
    data["fixed"]["proxy_steps"] = "1"
    data.update(changes)
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def hold_lock(cwd, storage: str, study: str = "tiny") -> subprocess.Popen:
    """A process holding the driver lock of `study` in `storage`, as a running driver does."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; from search.records.storage import DriverLock\n"
            f"with DriverLock({storage!r}, {study!r}):\n    print('held', flush=True); time.sleep(60)",
        ],
        cwd=cwd,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    return holder
