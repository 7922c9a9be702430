"""What a killed driver leaves behind: the Ray processes it started.

A driver SIGKILLed takes its raylet and GCS with it, but Ray's agents (`DashboardAgent`, `RuntimeEnvAgent`, ~175 MB,
still listening) live on for minutes. A killed process runs nothing, so somebody must find them later: a run that
starts a local Ray records the processes it started (in this user's cache folder), and a later run, or `search cluster
stop`, ends those whose driver is gone. Neither Ray's own session folder (`/tmp/ray/session_latest`, shared by every
Ray of the machine) nor `ray stop` (every Ray of the user, by name) can tell this run's processes from another's, and
a process group or subreaper dies with the driver it belongs to.

A record is a file anybody able to write the cache can forge, so it is evidence, never an order. A process is
signalled only when every one of these holds:
- the record is a file of this user, written on this host in this boot (a shared home holds other machines' runs,
  alive or not), in the form `record_started` writes; anything else is ignored with one line naming the file;
- its PID is an integer above 1 (never 0, -1 or `true`: `kill(2)` reads those as a process group, every process,
  init) and its start time (an integer, /proc/PID/stat field 22) is the recorded one, so a reused PID is not it;
- it belongs to this user (its real uid);
- it holds a file open inside the run's Ray session folder (every Ray process does: its logs and sockets), a folder
  Ray names after the process that started it, which must be the record's driver: a `sleep`, a Python, or the Ray of
  a run still alive, named in a forged record, is left alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from trainer.files import atomic_write_json, default_cache_dir

SESSION = re.compile(r"session_[0-9_-]+_(?P<driver>[0-9]+)")  # Ray's session folder: `session_<time>_<driver pid>`


def records() -> Path:
    """The folder of the records, one `<host>-<driver pid>.json` per run with a local Ray."""
    return default_cache_dir() / "ray-runs"


def start_time(pid: int) -> int | None:
    """A process's start time (clock ticks since boot, /proc/PID/stat field 22), or None when it is gone (or a
    zombie: dead, waiting for its parent to read its status)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return None if fields[0] in ("Z", "X") else int(fields[19])
    except (OSError, ValueError, IndexError):
        return None


def boot_id() -> str:
    """This boot's id (`/proc/sys/kernel/random/boot_id`): start times count from it."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def descendants(pid: int) -> list[int]:
    """Every living process under `pid` (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parent = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(parent, []).append(int(entry))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def record_started(session: str) -> Path:
    """Record this driver and the processes under it (the local Ray it just started, whose session folder is
    `session`)."""
    me = os.getpid()
    entries = [[pid, start] for pid in descendants(me) if (start := start_time(pid)) is not None]
    path = records() / f"{socket.gethostname()}-{me}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"host": socket.gethostname(), "boot": boot_id(), "uid": os.getuid(), "session": session}
    atomic_write_json(path, {**record, "driver": [me, start_time(me)], "processes": entries})
    return path


@dataclass(frozen=True)
class Record:
    """A record read back and checked: the driver and the processes, each a (PID > 1, start time) pair."""

    path: Path
    host: str
    boot: str
    session: str
    driver: tuple[int, int]
    processes: tuple[tuple[int, int], ...]

    def ours(self, pid: int, start: int) -> bool:
        """Whether `pid` is still the process this record names: same start, this user's, with a file open in the
        run's Ray session folder."""
        return start_time(pid) == start and _owner(pid) == os.getuid() and _holds_file_in(pid, self.session)


def read_record(path: Path) -> Record:
    """The record at `path`, or ValueError saying what is wrong with it."""
    if path.is_symlink() or path.stat().st_uid != os.getuid():
        raise ValueError("not a file of this user")
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    host, boot, session = (data.get(key) for key in ("host", "boot", "session"))
    if not (isinstance(host, str) and isinstance(boot, str) and isinstance(session, str) and host and boot):
        raise ValueError("host, boot and session must be non-empty texts")
    processes = data.get("processes")
    if not isinstance(processes, list):
        raise ValueError("processes must be a list")
    driver = _pair(data.get("driver"))
    named = SESSION.fullmatch(os.path.basename(session))
    if not os.path.isabs(session) or named is None or int(named["driver"]) != driver[0]:
        raise ValueError(f"session {session!r} is not a Ray session folder started by the driver {driver[0]}")
    return Record(path, host, boot, session, driver, tuple(_pair(p) for p in processes))


def end_leftovers(grace: float = 3.0) -> list[int]:
    """End the recorded processes of every run of this host and boot whose driver is gone; return their PIDs.
    A record this function cannot trust is left alone, or removed when it can only mislead (another boot, malformed),
    with one line on stderr naming it."""
    ended: list[int] = []
    folder = records()
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            record = read_record(path)
        except (OSError, ValueError) as exc:
            print(f"ignored {path}: not a record of a run's Ray processes ({exc}); removed", file=sys.stderr)
            with contextlib.suppress(OSError):
                path.unlink()
            continue
        if record.host != socket.gethostname():
            continue  # another machine's run on a shared home: not ours to judge
        if record.boot != boot_id():
            path.unlink(missing_ok=True)  # every process it names ended with that boot
            continue
        if start_time(record.driver[0]) == record.driver[1]:
            continue  # that run is alive
        ended += _end([(pid, start) for pid, start in record.processes if record.ours(pid, start)], grace)
        path.unlink(missing_ok=True)
    return ended


def _end(processes: list[tuple[int, int]], grace: float) -> list[int]:
    """SIGTERM, then SIGKILL what is left after `grace`; wait until the kernel has reaped them."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid, start in processes:
            if start_time(pid) == start:
                _signal(pid, sig)
        deadline = time.monotonic() + grace
        while any(start_time(pid) == start for pid, start in processes) and time.monotonic() < deadline:
            time.sleep(0.05)
    return [pid for pid, _ in processes]


def _pair(entry: object) -> tuple[int, int]:
    """A (PID, start time) pair as `record_started` writes it, or ValueError: `bool` is an int to Python and
    `kill(2)` reads 0, -1 and 1 as the group, everyone and init."""
    if not (isinstance(entry, list) and len(entry) == 2):
        raise ValueError(f"{entry!r} is not a [pid, start time] pair")
    pid, start = entry
    if type(pid) is not int or type(start) is not int or pid <= 1 or start < 0:
        raise ValueError(f"{entry!r}: the PID must be an integer above 1 and the start time a whole number")
    return pid, start


def _owner(pid: int) -> int | None:
    """The real uid of `pid` (/proc/PID/status), or None when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Uid:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _holds_file_in(pid: int, folder: str) -> bool:
    """Whether `pid` has a file open inside `folder` (readable for this user's own processes only)."""
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{pid}/fd/{fd}").startswith(folder + "/"):
                    return True
    except OSError:
        pass
    return False


def _signal(pid: int, sig: signal.Signals) -> None:
    if pid > 1:  # the last guard: whatever led here, never a group, everyone or init
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
