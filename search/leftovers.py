"""What a killed driver leaves behind: the Ray processes it started.

A driver SIGKILLed takes its raylet and GCS with it, but Ray's agents (`DashboardAgent`, `RuntimeEnvAgent`, ~175 MB,
still listening) live on for minutes. So a run that starts a local Ray records the processes it started (each by
PID and start time, in this user's cache folder); a later run, or `search cluster stop`, ends those whose driver is
gone. Never by name: another Ray on the machine is not ours to stop, and a PID reused by another program has another
start time.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from pathlib import Path

from trainer.files import atomic_write_json, default_cache_dir


def records() -> Path:
    """The folder of the records, one `<driver pid>.json` per run with a local Ray."""
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


def record_started() -> Path:
    """Record this driver and the processes under it (the local Ray it just started)."""
    me = os.getpid()
    entries = [[pid, start] for pid in descendants(me) if (start := start_time(pid)) is not None]
    path = records() / f"{me}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, {"driver": [me, start_time(me)], "processes": entries})
    return path


def end_leftovers(grace: float = 3.0) -> list[int]:
    """End the recorded processes of every run whose driver is gone; return their PIDs."""
    ended: list[int] = []
    folder = records()
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            record = json.loads(path.read_text())
            driver, started = record["driver"]
        except (OSError, ValueError, KeyError, TypeError):
            path.unlink(missing_ok=True)  # not ours to read: a record is only ever written whole
            continue
        if start_time(driver) == started:
            continue  # that run is alive
        alive = [pid for pid, start in record["processes"] if start_time(pid) == start]
        for pid in alive:
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while any(start_time(pid) is not None for pid in alive) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid, start in record["processes"]:
            if start_time(pid) == start:
                _signal(pid, signal.SIGKILL)
        deadline = time.monotonic() + grace
        while any(start_time(pid) == start for pid, start in record["processes"]) and time.monotonic() < deadline:
            time.sleep(0.05)  # a killed process is gone once the kernel has reaped it: wait for that
        ended += alive
        path.unlink(missing_ok=True)
    return ended


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)
