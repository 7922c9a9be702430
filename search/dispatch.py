"""Where trials run: `RayExecutor` (one Ray task per trial, local Ray or a cluster) or `LocalExecutor` (one
subprocess at a time). Both take `TrialTask`s and hand back `Completion`s; neither touches the study database:
results travel back as return values (Ray) or `result.json` (local), so a multi-node cluster needs no shared DB.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from search.study import one_line, read_result


@dataclass
class TrialTask:
    """One trial to run: its study trial number, point key, resolved config and folder."""

    number: int
    grid_key: str
    config: dict[str, Any]
    workdir: Path


@dataclass
class Completion:
    """How a task ended: `metrics` when it succeeded, else a one-line `reason` and its `failure_kind`."""

    task: TrialTask
    metrics: dict[str, Any] | None = None
    reason: str | None = None

    @property
    def kind(self) -> str:
        return failure_kind(self.reason or "")


def failure_kind(reason: str) -> str:
    """"disk_full" when the reason is a full disk (the machine's fault: it does not use up an attempt), else
    "error"."""
    return "disk_full" if "disk full" in reason or "[Errno 28]" in reason or "No space left" in reason else "error"


class Executor(Protocol):
    """What the driver needs of an executor."""

    slots: int

    def submit(self, task: TrialTask) -> None: ...

    def wait(self, timeout: float) -> list[Completion]: ...

    def cancel_all(self) -> None: ...

    def close(self) -> None: ...


def run_task(config: dict[str, Any], workdir: str, threads: int) -> dict[str, Any]:
    """Run one trial in this Ray worker and return its metrics (with the Ray node that ran it)."""
    import ray
    import torch

    from trainer import TrialConfig, run_trial

    torch.set_num_threads(max(1, threads))
    metrics = run_trial(TrialConfig.from_dict(config), workdir).metrics
    return {**metrics, "ray_node": ray.get_runtime_context().get_node_id()}


class RayExecutor:
    """One Ray task per trial, with `num_cpus`/`num_gpus` (fractions allowed) from the space or the flags.

    Trials that use a GPU run each in a fresh worker process (`max_calls=1`), which frees its GPU memory."""

    def __init__(self, address: str | None, cpus_per_trial: float, gpus_per_trial: float,
                 max_concurrent: int | None) -> None:
        import ray

        os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a local cluster needs no token
        self.ray = ray
        self.started = not ray.is_initialized()
        if self.started:
            if address:
                ray.init(address=address, include_dashboard=False, log_to_driver=False)
            else:
                ray.init(include_dashboard=False, log_to_driver=False,
                         object_store_memory=256 * 2**20)
        self.cpus = cpus_per_trial
        options = {"num_cpus": cpus_per_trial, "num_gpus": gpus_per_trial, "max_retries": 0}
        if gpus_per_trial:
            options["max_calls"] = 1
        self.remote = ray.remote(run_task).options(**options)
        capacity = ray.cluster_resources()
        fits = int(capacity.get("CPU", 1) // cpus_per_trial) if cpus_per_trial else 1
        if gpus_per_trial:
            fits = min(fits, int(capacity.get("GPU", 0) // gpus_per_trial))
        if fits < 1:
            raise RuntimeError(f"the Ray cluster ({capacity}) cannot fit one trial of {cpus_per_trial} CPUs and "
                               f"{gpus_per_trial} GPUs")
        self.slots = min(fits, max_concurrent) if max_concurrent else fits
        self.inflight: dict[Any, TrialTask] = {}

    def submit(self, task: TrialTask) -> None:
        ref = self.remote.remote(task.config, str(task.workdir), int(max(1, self.cpus)))
        self.inflight[ref] = task

    def wait(self, timeout: float) -> list[Completion]:
        if not self.inflight:
            return []
        ready, _ = self.ray.wait(list(self.inflight), num_returns=len(self.inflight), timeout=timeout)
        done = []
        for ref in ready:
            task = self.inflight.pop(ref)
            try:
                done.append(Completion(task, metrics=self.ray.get(ref)))
            except self.ray.exceptions.RayTaskError as exc:
                cause = exc.cause if getattr(exc, "cause", None) is not None else exc
                done.append(Completion(task, reason=f"{type(cause).__name__}: {one_line(str(cause))}"))
            except self.ray.exceptions.RayError as exc:  # the worker or its node died
                done.append(Completion(task, reason=f"{type(exc).__name__}: {one_line(str(exc))}"))
        return done

    def cancel_all(self) -> None:
        for ref in self.inflight:
            self.ray.cancel(ref, force=True)
        self.inflight.clear()

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()


def _die_with_parent() -> None:
    # Linux: the trial subprocess gets SIGKILL when the driver dies, even by kill -9.
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class LocalExecutor:
    """Trials one by one, each `search trial CONFIG.json --out DIR` in a subprocess; its output goes to the trial
    folder's `stderr.log`."""

    slots = 1

    def __init__(self) -> None:
        self.running: tuple[subprocess.Popen, TrialTask] | None = None

    def submit(self, task: TrialTask) -> None:
        task.workdir.mkdir(parents=True, exist_ok=True)
        config_path = task.workdir / "config.json"
        config_path.write_text(json.dumps(task.config, indent=2, sort_keys=True))
        with open(task.workdir / "stderr.log", "ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "search", "trial", str(config_path), "--out", str(task.workdir)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
        self.running = (process, task)

    def wait(self, timeout: float) -> list[Completion]:
        if self.running is None:
            return []
        process, task = self.running
        deadline = time.monotonic() + timeout
        while process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if process.returncode is None:
            return []
        self.running = None
        result = read_result(task.workdir)
        if process.returncode == 0 and result is not None:
            return [Completion(task, metrics=result["metrics"])]
        return [Completion(task, reason=_failure_line(task.workdir, process.returncode))]

    def cancel_all(self) -> None:
        if self.running is None:
            return
        process, _ = self.running
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        self.running = None

    def close(self) -> None:
        self.cancel_all()


FAILURE_PREFIX = "trial failed: "


def _failure_line(workdir: Path, returncode: int) -> str:
    """The reason `search trial` printed last, or how the process died."""
    try:
        lines = (workdir / "stderr.log").read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    reasons = [ln[len(FAILURE_PREFIX):] for ln in lines if ln.startswith(FAILURE_PREFIX)]
    if reasons:
        return reasons[-1]
    if returncode < 0:
        return f"trial process killed by signal {signal.Signals(-returncode).name}"
    return f"trial process exited with code {returncode}: {one_line(lines[-1]) if lines else 'no output'}"
