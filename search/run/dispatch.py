"""Where jobs run: `RayExecutor` (one Ray task per job, on a local Ray or a cluster) or `LocalExecutor` (one
subprocess at a time). Both take `Job`s (`search.run.worker`) and hand back `Completion`s; neither touches the study
database: outcomes travel back as return values (Ray) or a small JSON file (local), so a cluster needs no shared
database.
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from search.records.storage import StudyError, one_line
from search.run.leftovers import end_leftovers, record_started
from search.run.rayauth import check_cluster, protect_token_file, require_token
from search.run.worker import Job, Outcome, OutcomeStatus, Settings, job_file, run_job
from trainer.failures import FailureKind, failure_kind
from trainer.folder import OUTCOME, STDERR

OBJECT_STORE_BYTES = 256 * 2**20  # trials return a few kilobytes; their files go to the artifact store


class ResourceError(StudyError):
    """The executor cannot run one trial as asked (no GPU, too few on any node); the message says what to change."""


@dataclass(frozen=True)
class Completion:
    """How a job ended: its `outcome` when it ran to its end (or its rung), else a one-line `reason` and the
    `failure` kind (`failed`)."""

    job: Job
    outcome: Outcome | None = None
    reason: str | None = None
    failure: FailureKind | None = None

    @classmethod
    def failed(cls, job: Job, reason: str, kind: FailureKind = FailureKind.ERROR) -> Completion:
        """A failed job: out of memory counts as the packing's ("oom") only on a GPU shared with other trials."""
        return cls(job, reason=reason, failure=kind.on_gpus(job.gpus))


class Executor(Protocol):
    """What the driver needs of an executor."""

    slots: int

    def start(self) -> None: ...

    def submit(self, job: Job) -> None: ...

    def wait(self, timeout: float) -> list[Completion]: ...

    def cancel_all(self) -> None: ...

    def close(self) -> None: ...


def run_task(job: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """A job in a Ray worker: the worker's outcome, with the Ray node and the GPU ids Ray gave it, as plain data."""
    import ray

    outcome = run_job(Job.from_data(job), Settings(**settings))
    node, gpus = ray.get_runtime_context().get_node_id(), [str(g) for g in ray.get_gpu_ids()]
    return dataclasses.replace(outcome, node=node, gpu_ids=gpus).to_data()


def cluster_capacity(ray: Any) -> list[dict[str, float]]:
    """The resources of each live node of the Ray cluster."""
    return [node["Resources"] for node in ray.nodes() if node.get("Alive")]


def check_fits(nodes: list[dict[str, float]], cpus: float, gpus: float) -> None:
    """Raise `ResourceError` when no node can run one trial of `cpus` CPUs and `gpus` GPUs."""
    if gpus > 0 and not any(n.get("GPU", 0) for n in nodes):
        raise ResourceError(
            f"resources.gpus_per_trial is {gpus:g} but the Ray cluster has no GPU (this machine has "
            f"none, or its nodes were started without --num-gpus): set gpus_per_trial: 0 (or "
            f"--gpus-per-trial 0) to train on CPUs, or join a cluster with GPUs (--ray-address)"
        )
    most_gpus = max((n.get("GPU", 0) for n in nodes), default=0)
    if gpus > most_gpus:
        raise ResourceError(
            f"a trial needs {gpus:g} GPUs but no node of the Ray cluster has more than "
            f"{most_gpus:g}: lower resources.gpus_per_trial (or --gpus-per-trial)"
        )
    most_cpus = max((n.get("CPU", 0) for n in nodes), default=0)
    if cpus > most_cpus:
        raise ResourceError(
            f"a trial needs {cpus:g} CPUs but no node of the Ray cluster has more than "
            f"{most_cpus:g}: lower resources.cpus_per_trial (or --cpus-per-trial)"
        )


def machine_gpus() -> int:
    """The GPUs a Ray started on this machine would find, counted as Ray counts them but without importing torch or
    Ray: the NVIDIA driver's devices, at most as many as $CUDA_VISIBLE_DEVICES names when it is set."""
    driver = Path("/proc/driver/nvidia/gpus")
    found = len(list(driver.iterdir())) if driver.is_dir() else 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        found = min(found, len([d for d in visible.split(",") if d.strip()]))
    return found


def check_machine(cpus: float, gpus: float) -> None:
    """What `check_fits` says of a Ray started on this machine, before any is: `search run --dry-run`'s check."""
    check_fits([{"CPU": float(os.cpu_count() or 1), "GPU": float(machine_gpus())}], cpus, gpus)


class RayExecutor:
    """One Ray task per job, with `num_cpus`/`num_gpus` (fractions allowed) from the space or the flags.

    Jobs with a GPU run in a fresh worker process each (`max_calls=1`, which Ray accepts only in `ray.remote`, never
    in `.options()`), so a finished trial's GPU memory is freed with its process. A job whose trial ran out of
    memory on a shared GPU is retried with a whole one (`Job.gpus`)."""

    def __init__(
        self,
        address: str | None,
        cpus_per_trial: float,
        gpus_per_trial: float,
        max_concurrent: int | None,
        settings: Settings,
    ) -> None:
        require_token()  # before Ray is imported: it reads RAY_AUTH_MODE once, then keeps it
        import ray

        self.ray, self.settings = ray, settings
        self.started = not ray.is_initialized()
        self.record: Path | None = None
        if self.started:
            if address:
                check_cluster(address)  # one line, in a second, for an address or a token Ray would refuse
            elif ended := end_leftovers():
                print(f"ended {len(ended)} Ray processes a killed run left behind (pids {ended})", file=sys.stderr)
            # "local": a Ray of this run's own. Without it ray.init joins the newest `ray start` cluster on this
            # machine or $RAY_ADDRESS (and fails there, object_store_memory being set): --ray-address is the one
            # way to join a cluster.
            try:
                ray.init(
                    address=address or "local",
                    object_store_memory=None if address else OBJECT_STORE_BYTES,  # a cluster has its own
                    include_dashboard=False,
                    log_to_driver=False,
                    logging_level=logging.WARNING,
                )
            except Exception as exc:  # Ray raises ConnectionError, RuntimeError, its own errors
                where = f"join the Ray at {address}" if address else "start a local Ray"
                raise ResourceError(f"cannot {where}: {one_line(str(exc) or type(exc).__name__, 300)}") from None
            if not address:  # what a later run ends if this one is killed
                node = ray._private.worker._global_node  # Ray's own name for the folder its processes write in
                self.record = record_started(node.get_session_dir_path())  # type: ignore[attr-defined]
        protect_token_file()  # a local Ray has just written its token, readable by everyone
        try:
            nodes = cluster_capacity(ray)
            check_fits(nodes, cpus_per_trial, gpus_per_trial)
        except ResourceError:
            self.close()
            raise
        self.cpus, self.gpus = cpus_per_trial, gpus_per_trial
        self.cpu_task = ray.remote(run_task)
        self.gpu_task = ray.remote(max_calls=1)(run_task)
        total_cpus = sum(n.get("CPU", 0) for n in nodes)
        fits = int(total_cpus // cpus_per_trial)
        if gpus_per_trial:
            fits = min(fits, int(sum(n.get("GPU", 0) for n in nodes) // gpus_per_trial))
        self.slots = max(1, min(fits, max_concurrent) if max_concurrent else fits)
        self.inflight: dict[Any, Job] = {}

    def start(self) -> None:
        """Nothing: Ray starts its worker processes itself."""

    def submit(self, job: Job) -> None:
        job = job.with_gpus(self.gpus)
        task = self.gpu_task if job.gpus else self.cpu_task
        ref = task.options(num_cpus=self.cpus, num_gpus=job.gpus, max_retries=0).remote(
            job.to_data(), asdict(self.settings)
        )
        self.inflight[ref] = job

    def wait(self, timeout: float) -> list[Completion]:
        if not self.inflight:
            time.sleep(min(timeout, 0.05))
            return []
        ready, _ = self.ray.wait(list(self.inflight), num_returns=len(self.inflight), timeout=timeout)
        done = []
        for ref in ready:
            job = self.inflight.pop(ref)
            try:
                done.append(Completion(job, outcome=Outcome.from_data(self.ray.get(ref))))
            except self.ray.exceptions.RayTaskError as exc:
                cause = exc.cause if getattr(exc, "cause", None) is not None else exc
                reason = f"{type(cause).__name__}: {one_line(str(cause))}"
                done.append(Completion.failed(job, reason, failure_kind(cause)))
            except self.ray.exceptions.RayError as exc:  # the worker or its node died
                done.append(Completion.failed(job, f"{type(exc).__name__}: {one_line(str(exc))}"))
        return done

    def cancel_all(self) -> None:
        for ref in self.inflight:
            self.ray.cancel(ref, force=True)
        self.inflight.clear()

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()
        if self.record is not None:
            self.record.unlink(missing_ok=True)


def _die_with_parent() -> None:
    # Linux: the job subprocess gets SIGKILL when the driver dies, even by kill -9.
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class LocalExecutor:
    """Jobs one by one in a warm worker process (`python -m search.run.worker`), which keeps torch imported between
    jobs; each job's output goes to its folder's `stderr.log` (or under `logs/` of the run folder when the store is
    remote). With GPUs each job gets a fresh process, so its GPU memory is freed when it ends. The worker dies with
    the driver, even by kill -9."""

    slots = 1

    def __init__(self, settings: Settings, log_dir: Path, gpus_per_trial: float = 0.0) -> None:
        if gpus_per_trial > 0:
            import torch

            if not torch.cuda.is_available():
                raise ResourceError(
                    f"resources.gpus_per_trial is {gpus_per_trial:g} but this machine has no GPU "
                    f"CUDA can use: set gpus_per_trial: 0 (or --gpus-per-trial 0) to train on CPUs"
                )
        self.settings, self.log_dir, self.gpus = settings, log_dir, gpus_per_trial
        self.fresh = gpus_per_trial > 0
        self.worker: subprocess.Popen | None = None
        self.running: tuple[Job, Path, Path] | None = None

    def start(self) -> None:
        """Start the worker now, so that its imports (torch, timm, grad-cam: ~5 s) overlap the driver's own start
        (the decoded-image cache, the plan) instead of delaying the first job."""
        self._worker()

    def submit(self, job: Job) -> None:
        from search.records.store import ArtifactStore

        store = ArtifactStore(self.settings.store)
        job = job.with_gpus(self.gpus)  # a job given no GPU hides them (`search.run.worker.run_job`)
        log = store.local_path(job.folder) / STDERR if store.local else self.log_dir / f"{job.label}.log"
        folder = Path(tempfile.mkdtemp(prefix="pas-job-"))
        spec = job_file(job, self.settings, log, folder / "job.json")
        stdin = self._worker().stdin
        if stdin is None:
            raise OSError("the worker process has no stdin")
        stdin.write(f"{spec}\n")
        stdin.flush()
        self.running = (job, folder, log)

    def _worker(self) -> subprocess.Popen:
        """The warm worker, started anew when there is none or it died."""
        if self.worker is None or self.worker.poll() is not None:
            self.worker = subprocess.Popen(
                [sys.executable, "-P", "-m", "search.run.worker"],  # -P: never a `search/` of the cwd
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                text=True,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )
        return self.worker

    def wait(self, timeout: float) -> list[Completion]:
        if self.running is None:
            time.sleep(min(timeout, 0.05))
            return []
        job, folder, log = self.running
        worker = self._worker() if self.worker is None else self.worker
        outcome_file = folder / OUTCOME
        deadline = time.monotonic() + timeout
        while not outcome_file.exists() and worker.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        if not outcome_file.exists() and worker.poll() is None:
            return []
        self.running = None
        try:
            outcome: Outcome | None = Outcome.from_data(json.loads(outcome_file.read_text()))
        except (OSError, ValueError, TypeError):  # the worker died without one
            outcome = None
        _remove(folder)
        if self.fresh:  # a GPU job's process ends with the job, whatever its outcome: no sticky CUDA error or
            self.close()  # reserved memory reaches the next one
        if outcome is None:
            self.worker = None
            return [Completion.failed(job, _death(worker.returncode, log))]
        if outcome.status == OutcomeStatus.ERROR:
            return [Completion.failed(job, outcome.reason or "unknown error", outcome.failure or FailureKind.ERROR)]
        return [Completion(job, outcome=dataclasses.replace(outcome, node="local"))]

    def cancel_all(self) -> None:
        if self.running is not None:
            _remove(self.running[1])
            self.running = None
        self.close()

    def close(self) -> None:
        if self.worker is None:
            return
        if self.worker.poll() is None:
            self.worker.terminate()
            try:
                self.worker.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.worker.kill()
                self.worker.wait()
        self.worker = None


def _remove(folder: Path) -> None:
    for child in folder.iterdir():
        child.unlink(missing_ok=True)
    folder.rmdir()


def _death(returncode: int, log: Path) -> str:
    """How a job process died when it wrote no outcome."""
    if returncode < 0:
        return f"trial process killed by signal {signal.Signals(-returncode).name}"
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    return f"trial process exited with code {returncode}: {one_line(lines[-1]) if lines else 'no output'}"
