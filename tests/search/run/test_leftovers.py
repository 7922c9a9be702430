"""search.run.leftovers: what a killed run's record may and may not make this process signal. `os.kill` is observed
(every call recorded; only this test's own children are really signalled), so a record that would reach PID 0, -1
or 1, another user's process or a process that is not the run's Ray shows up as a call, not as a dead machine."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from search.run import leftovers
from search.run.leftovers import boot_id, end_leftovers, start_time
from tests.search.helpers import python_process


@pytest.fixture
def kills(monkeypatch, tmp_path):
    """Every `os.kill` this process makes, as (pid, signal); only the test's own children are really signalled."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    calls: list[tuple[int, int]] = []
    real_kill, children = os.kill, set()

    def observed(pid: int, sig: int) -> None:
        calls.append((pid, sig))
        if pid in children:
            real_kill(pid, sig)

    monkeypatch.setattr(os, "kill", observed)
    calls_and_children = (calls, children)
    yield calls_and_children
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            real_kill(pid, 9)


def dead_driver() -> tuple[int, int]:
    """A PID and start time of a process that has ended (a killed driver)."""
    proc = subprocess.Popen(["sleep", "0.3"])
    started = start_time(proc.pid)
    proc.wait()
    assert started is not None
    return proc.pid, started


def session_of(tmp_path: Path, driver: int) -> Path:
    """A folder named as Ray names a session started by `driver`."""
    folder = tmp_path / f"session_2026-12-05_12-00-00_123456_{driver}"
    (folder / "logs").mkdir(parents=True, exist_ok=True)
    folder.chmod(0o777)
    (folder / "logs").chmod(0o777)
    return folder


def holding(session: Path, children: set, user: int | None = None) -> subprocess.Popen:
    """A process that keeps a file open inside `session`, as each of Ray's processes does (its logs)."""
    script = 'exec 3>>"$0"; echo ready; exec sleep 60'  # the file stays open in the sleep
    log = str(session / "logs" / "agent.log")
    proc = subprocess.Popen(["sh", "-c", script, log], stdout=subprocess.PIPE, text=True, user=user)
    assert proc.stdout.readline().strip() == "ready"
    children.add(proc.pid)
    return proc


def write_record(name: str, record: object) -> Path:
    path = leftovers.records() / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))
    return path


def record_of(driver: tuple[int, int], session: Path, processes: list, **changes: object) -> dict:
    record = {
        "host": socket.gethostname(),
        "boot": boot_id(),
        "uid": os.getuid(),
        "session": str(session),
        "driver": list(driver),
        "processes": processes,
    }
    return {**record, **changes}


def test_a_dead_runs_ray_processes_are_ended_and_nothing_else(kills, tmp_path):
    calls, children = kills
    driver = dead_driver()
    session = session_of(tmp_path, driver[0])
    agent = holding(session, children)
    bystander = subprocess.Popen(["sleep", "60"])  # this user's, alive, named in the record: not the run's Ray
    children.add(bystander.pid)
    entries = [[agent.pid, start_time(agent.pid)], [bystander.pid, start_time(bystander.pid)]]
    path = write_record("host-1.json", record_of(driver, session, entries))
    assert end_leftovers(grace=5) == [agent.pid]
    assert agent.wait(timeout=10) is not None and bystander.poll() is None
    assert {pid for pid, _ in calls} == {agent.pid} and not path.exists()


def test_a_record_whose_driver_lives_is_left_alone(kills, tmp_path):
    calls, children = kills
    me = (os.getpid(), start_time(os.getpid()))
    session = session_of(tmp_path, me[0])
    agent = holding(session, children)
    path = write_record("host-2.json", record_of(me, session, [[agent.pid, start_time(agent.pid)]]))
    assert end_leftovers(grace=1) == [] and calls == [] and path.exists()


@pytest.mark.parametrize(
    "processes",
    [
        [[-1, None]],  # kill(-1): every process the user may signal
        [[0, None]],  # kill(0): the caller's own process group
        [[True, None]],  # True is 1 to Python: init
        [[1, "START"]],  # init, with its true start time
        [[-1, 0]],
        [[2.5, 0]],
        [["12", 0]],
        [[12, 0, 3]],  # three elements
        [12],
        "all",
    ],
)
def test_a_malformed_process_entry_signals_nothing_and_says_which_file(kills, tmp_path, capsys, processes):
    calls, _ = kills
    driver = dead_driver()
    if processes == [[1, "START"]]:
        processes = [[1, start_time(1)]]
    path = write_record("host-3.json", record_of(driver, session_of(tmp_path, driver[0]), processes))
    assert end_leftovers(grace=1) == [] and calls == []
    err = capsys.readouterr().err
    assert str(path) in err and "Traceback" not in err and err.count("\n") == 1
    assert not path.exists()  # said once, not at every later run


@pytest.mark.parametrize(
    "change",
    [
        {"driver": [4000000, None]},
        {"driver": [True, 1]},
        {"driver": [0, 1]},
        {"processes": None},
        {"session": "/tmp/ray/session_latest"},
        {"session": "relative/session_2026-12-05_12-00-00_1_42"},
        {"host": 7},
        "not an object",
    ],
)
def test_a_malformed_record_is_ignored_in_one_line(kills, tmp_path, capsys, change):
    calls, children = kills
    driver = dead_driver()
    session = session_of(tmp_path, driver[0])
    agent = holding(session, children)
    record = record_of(driver, session, [[agent.pid, start_time(agent.pid)]])
    path = write_record("host-4.json", {**record, **change} if isinstance(change, dict) else change)
    assert end_leftovers(grace=1) == [] and calls == [] and agent.poll() is None
    assert str(path) in capsys.readouterr().err


def test_a_record_naming_a_session_another_driver_started_signals_nothing(kills, tmp_path):
    """A forged record pointing at the session of a run that is alive: that Ray's folder names its own driver."""
    calls, children = kills
    driver = dead_driver()
    session = session_of(tmp_path, os.getpid())  # started by a live process, not by the record's driver
    agent = holding(session, children)
    write_record("host-5.json", record_of(driver, session, [[agent.pid, start_time(agent.pid)]]))
    assert end_leftovers(grace=1) == [] and calls == [] and agent.poll() is None


def test_a_plain_process_with_its_true_start_time_is_not_signalled(kills, tmp_path):
    calls, children = kills
    driver = dead_driver()
    sleeper = subprocess.Popen(["sleep", "60"])
    children.add(sleeper.pid)
    write_record(
        "host-6.json", record_of(driver, session_of(tmp_path, driver[0]), [[sleeper.pid, start_time(sleeper.pid)]])
    )
    assert end_leftovers(grace=1) == [] and calls == [] and sleeper.poll() is None


def test_a_reused_pid_is_not_signalled(kills, tmp_path):
    calls, children = kills
    driver = dead_driver()
    session = session_of(tmp_path, driver[0])
    agent = holding(session, children)
    write_record("host-7.json", record_of(driver, session, [[agent.pid, start_time(agent.pid) - 1]]))
    assert end_leftovers(grace=1) == [] and calls == [] and agent.poll() is None


@pytest.mark.skipif(os.getuid() != 0, reason="starting another user's process needs root")
def test_another_users_process_is_not_signalled(kills, short_dir):
    calls, children = kills
    short_dir.chmod(0o777)  # the other user opens a file in it
    driver = dead_driver()
    session = session_of(short_dir, driver[0])
    other = holding(session, children, user=65534)
    write_record("host-8.json", record_of(driver, session, [[other.pid, start_time(other.pid)]]))
    assert end_leftovers(grace=1) == [] and calls == [] and other.poll() is None


@pytest.mark.skipif(os.getuid() != 0, reason="a file owned by another user needs root to make")
def test_a_record_file_of_another_user_is_not_obeyed(kills, tmp_path):
    calls, children = kills
    driver = dead_driver()
    session = session_of(tmp_path, driver[0])
    agent = holding(session, children)
    path = write_record("host-9.json", record_of(driver, session, [[agent.pid, start_time(agent.pid)]]))
    os.chown(path, 65534, 65534)
    assert end_leftovers(grace=1) == [] and calls == [] and agent.poll() is None


def test_another_hosts_record_is_kept_and_another_boots_removed(kills, tmp_path):
    """On a shared home a live run on another machine looks dead from here; after a reboot every process is gone."""
    calls, children = kills
    driver = dead_driver()
    session = session_of(tmp_path, driver[0])
    agent = holding(session, children)
    entries = [[agent.pid, start_time(agent.pid)]]
    elsewhere = write_record("other-1.json", record_of(driver, session, entries, host="another-machine"))
    rebooted = write_record("host-10.json", record_of(driver, session, entries, boot="another-boot"))
    assert end_leftovers(grace=1) == [] and calls == [] and agent.poll() is None
    assert elsewhere.exists() and not rebooted.exists()


def test_a_symlinked_record_is_not_obeyed(kills, tmp_path):
    calls, children = kills
    driver = dead_driver()
    session = session_of(tmp_path, driver[0])
    agent = holding(session, children)
    target = tmp_path / "elsewhere.json"
    target.write_text(json.dumps(record_of(driver, session, [[agent.pid, start_time(agent.pid)]])))
    leftovers.records().mkdir(parents=True, exist_ok=True)
    (leftovers.records() / "host-11.json").symlink_to(target)
    assert end_leftovers(grace=1) == [] and calls == [] and agent.poll() is None and target.exists()


def test_the_record_a_run_writes_names_its_own_session_and_children(kills, tmp_path):
    _, children = kills
    session = session_of(tmp_path, os.getpid())
    agent = holding(session, children)
    time.sleep(0.1)
    record = leftovers.read_record(leftovers.record_started(str(session)))
    assert record.driver == (os.getpid(), start_time(os.getpid())) and record.host == socket.gethostname()
    assert (agent.pid, start_time(agent.pid)) in record.processes


DRIVER = (
    "import os, time\n"
    "from search.run.dispatch import RayExecutor\n"
    "from search.run.worker import Settings\n"
    "executor = RayExecutor(None, 1, 0, None, Settings({store!r}, None))\n"
    "print(executor.record, flush=True)\n"
    "time.sleep(300)\n"
)


@pytest.mark.slow
def test_the_ray_processes_a_killed_driver_left_are_ended_by_pid(tmp_path):
    """Item 13: after a SIGKILL of the driver, Ray's DashboardAgent and RuntimeEnvAgent stayed alive 2–3 minutes,
    still listening. The driver records what it started (PID and start time); the next run and `search cluster
    stop` end what a dead driver recorded, and nothing else."""
    from search.run.leftovers import end_leftovers, start_time

    driver = python_process(DRIVER.format(store=str(tmp_path / "store")))
    record = Path(driver.stdout.readline().strip())
    processes = json.loads(record.read_text())["processes"]
    assert len(processes) >= 3  # gcs_server, raylet, the agents, workers
    assert end_leftovers() == [] and record.exists()  # its driver is alive: not ours to end
    os.kill(driver.pid, 9)
    driver.wait(timeout=60)
    time.sleep(2)
    left = [pid for pid, start in processes if start_time(pid) == start]
    assert left, "Ray's agents outlive a killed driver (if Ray stops leaving them, this test can go)"
    ended = end_leftovers()
    assert set(left) <= set(ended)
    assert all(start_time(pid) != start for pid, start in processes) and not record.exists()
