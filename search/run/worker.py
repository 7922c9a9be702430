"""One job, where it lands (a Ray task, or a subprocess of the local executor): a trial's run, or a shared stem.

`run_job` prepares the job's folder (from the store's newest checkpoint of its own folder, else of the folder it
continues: an earlier try, a shared stem), runs the trainer there with uploads as files are saved
(`search.records.store`),
cleans node-local scratch, and returns the outcome as plain data. It knows nothing of Optuna; Ray only adds who ran
it (`search.run.dispatch`). `python -m search.run.worker` is the local executor's warm worker process.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from search.records import record
from search.records.store import ArtifactStore, Uploader
from trainer.config import TrialConfig
from trainer.data.identity import Binding
from trainer.errors import DataError
from trainer.failures import FailureKind, failure_kind
from trainer.files import file_sha256
from trainer.folder import LOG, OUTCOME, SHARED, proxy_file, shared_input

SCRATCH_ENV = "PROXY_ATTENTION_SCRATCH"


class JobKind(enum.StrEnum):
    """A job runs a trial (to its end, or to a halving rung) or a stem (a shared prefix, then its proxy inputs)."""

    TRIAL = "trial"
    STEM = "stem"


class OutcomeStatus(enum.StrEnum):
    """How a job ended where it ran."""

    COMPLETE = "complete"
    PAUSED = "paused"  # at a halving rung
    STEM = "stem"  # a stem's work is in the store
    ERROR = "error"


@dataclass(frozen=True)
class Job:
    """What to run: a trial (to its end, or to `until`) or a stem (its prefix, then its shared proxy inputs).
    Frozen: an executor that decides a job's GPUs makes a new one (`with_gpus`)."""

    kind: JobKind
    label: str  # "trial 12", "stem 3f2a…"
    config: TrialConfig
    folder: str  # in the store: trials/<n>-<key> or stems/<key>
    until: int | None = None  # stop after this many epochs (a halving rung, a stem's end)
    groups: list[TrialConfig] = field(default_factory=list)  # a stem's CAM groups (one config each)
    start_from: str | None = None  # the folder to continue when this one has no checkpoint
    stem: str | None = None  # the stem whose shared/ holds this job's proxy-step inputs
    whole_gpu: bool = False  # out of GPU memory on a share before: at least a whole GPU this time
    gpus: float = 0.0  # what the executor gives it (`with_gpus`)
    number: int | None = None  # the Optuna trial (trials only)
    grid_key: str | None = None
    binding: Binding | None = None  # what the study bound its dataset to: the trial checks it reads the same
    matched: str | None = None  # a matched control's: its configuration's trial folder, whose proxies it takes
    keep_maps: bool = False  # a configuration whose matched controls will read its proxies' maps

    def with_gpus(self, default: float) -> Job:
        """This job on the executor's `default` GPUs per trial, or a whole GPU if it ran out of memory on a share
        (never a GPU on a run without them: a study resumed with `--gpus-per-trial 0`)."""
        return replace(self, gpus=max(default, 1.0) if self.whole_gpu and default else default)

    def to_data(self) -> dict[str, Any]:
        """Plain JSON-ready data: what crosses to a Ray task or the local worker process."""
        return asdict(self)

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> Job:
        """The job `to_data` wrote, its configs validated again on this side."""
        groups = [TrialConfig.from_dict(g) for g in data.get("groups", [])]
        binding = Binding(**data["binding"]) if data.get("binding") else None
        config = TrialConfig.from_dict(data["config"])
        return cls(**{**data, "kind": JobKind(data["kind"]), "config": config, "groups": groups, "binding": binding})


@dataclass(frozen=True)
class Outcome:
    """How a job ended where it ran: what crosses back to the driver (a Ray task's return value, or the local
    worker's outcome file), as plain data at that edge (`to_data` / `from_data`)."""

    status: OutcomeStatus
    metrics: dict[str, Any] = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)  # the trial's metrics.jsonl rows
    record: dict[str, Any] | None = None  # a stem's result
    reason: str | None = None  # an error's one line
    failure: FailureKind | None = None  # an error's kind, decided where it was raised
    node: str | None = None  # where it ran: a Ray node id, or "local"
    gpu_ids: list[str] = field(default_factory=list)

    def to_data(self) -> dict[str, Any]:
        """Plain JSON-ready data."""
        return {**asdict(self), "failure": None if self.failure is None else self.failure.value}

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> Outcome:
        """The outcome `to_data` wrote."""
        failure = data.get("failure")
        status = OutcomeStatus(data["status"])
        return cls(**{**data, "status": status, "failure": None if failure is None else FailureKind.read(failure)})

    @classmethod
    def error(cls, exc: BaseException) -> Outcome:
        """A job that raised `exc`: its one-line reason and its kind."""
        return cls(OutcomeStatus.ERROR, reason=f"{type(exc).__name__}: {_first_line(exc)}", failure=failure_kind(exc))


@dataclass
class Settings:
    """The same for every job of a run."""

    store: str
    cache_dir: str | None
    scratch: str | None = None
    threads: int = 1


def scratch_root(settings: Settings) -> Path:
    """Node-local scratch: `--scratch`, else $PROXY_ATTENTION_SCRATCH (set per node by `search cluster`), else the
    system's temporary folder."""
    root = settings.scratch or os.environ.get(SCRATCH_ENV) or str(Path(tempfile.gettempdir()) / "pas-scratch")
    return Path(root) / hashlib.sha256(settings.store.encode()).hexdigest()[:12]


def run_job(job: Job, settings: Settings) -> Outcome:
    """Run `job`; return its outcome ("complete", "paused" or "stem"). Raises what the trainer raises (the executor
    turns it into a failure)."""
    from trainer import run_trial
    from trainer.device import cap_gpu_memory, hide_gpus
    from trainer.stem import run_stem

    if not job.gpus:
        hide_gpus()
    elif job.gpus < 1:
        cap_gpu_memory(job.gpus)

    store = ArtifactStore(settings.store)
    scratch = scratch_root(settings)
    workdir = store.local_path(job.folder) if store.local else scratch / job.folder
    if not store.local:
        shutil.rmtree(workdir, ignore_errors=True)  # what a killed earlier try left on this node
    store.start_from(job.folder, job.start_from, workdir)
    uploader = None if store.local else Uploader(store, workdir, job.folder)

    def shared(step: int, key: str) -> Path | None:
        if job.stem is None:
            return None
        return store.fetch(f"{job.stem}/{shared_input(step, key)}", scratch / SHARED)

    def matched(step: int) -> Path | None:
        if job.matched is None:
            return None
        return matched_step(store, job.matched, step, scratch / "matched" / job.folder)

    config = job.config
    try:
        if job.kind == JobKind.STEM:
            if job.until is None:
                raise ValueError(f"{job.label} has no epoch to stop at")
            stem_record = run_stem(
                config,
                workdir,
                job.until,
                job.groups,
                cache_dir=settings.cache_dir,
                shared=shared,
                on_saved=uploader,
                threads=settings.threads,
                binding=job.binding,
            )
            return Outcome(OutcomeStatus.STEM, record=stem_record)
        result = run_trial(
            config,
            workdir,
            until=job.until,
            cache_dir=settings.cache_dir,
            shared=shared,
            on_saved=uploader,
            threads=settings.threads,
            tag=record.result_tag(job.number, job.grid_key),
            binding=job.binding,
            matched=matched,
            keep_maps=job.keep_maps,
        )
        status = OutcomeStatus.PAUSED if result.paused else OutcomeStatus.COMPLETE
        return Outcome(status, result.metrics, result.history)
    finally:
        if uploader is not None:
            uploader([LOG])
            try:
                uploader.close()
            finally:
                shutil.rmtree(workdir, ignore_errors=True)


def serve() -> int:
    """`python -m search.run.worker`: the local executor's warm worker. Reads one job file per line of stdin, runs it
    with its output in the job's log, and writes its outcome (or its failure) next to the job file, atomically."""
    import trainer.loop  # noqa: F401  (loaded while the driver prepares; importing torch leaves CUDA uninitialised)

    for line in sys.stdin:
        path = Path(line.strip())
        spec = json.loads(path.read_text())
        with _output_to(Path(spec["log"])):
            handler = logging.StreamHandler(sys.stderr)
            logging.getLogger("trainer").addHandler(handler)
            try:
                outcome = run_job(Job.from_data(spec["job"]), Settings(**spec["settings"]))
            except Exception as exc:  # the reason goes on one line, for the driver and the person reading
                outcome = Outcome.error(exc)
                print(f"trial failed: {outcome.reason}", file=sys.stderr)
            finally:
                logging.getLogger("trainer").removeHandler(handler)
        tmp = path.with_name(OUTCOME + ".tmp")
        tmp.write_text(json.dumps(outcome.to_data()))
        os.replace(tmp, path.with_name(OUTCOME))
    return 0


@contextlib.contextmanager
def _output_to(log: Path) -> Iterator[None]:
    """Send this process's stdout and stderr (file descriptors 1 and 2, so library output too) to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log, "ab") as target:
        os.dup2(target.fileno(), 1)
        os.dup2(target.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def matched_step(store: ArtifactStore, configuration: str, step: int, scratch: Path) -> Path | None:
    """A matched control's input: its configuration's proxy step `step`, fetched, and checked against the SHA-256
    the configuration recorded in its `result.json` when it wrote the file: a file damaged or edited since (maps
    zeroed, truncated) is named, never trained on. None when the file is missing. (A study made before the digest
    was recorded is read unchecked; a file that cannot be read is named by the trainer.)"""
    name = f"{configuration}/{proxy_file(step)}"
    path = store.fetch(name, scratch)
    if path is None:
        return None  # the trainer says the step is missing
    steps = (store.folder(configuration).read_result() or {}).get("proxy_steps")
    recorded = steps[step].get("file_sha256") if isinstance(steps, list) and step < len(steps) else None
    if isinstance(recorded, str) and file_sha256(path) != recorded:
        raise DataError(
            f"{store.uri}/{name} is not the file its configuration wrote (its SHA-256 differs from the one in "
            f"{configuration}/result.json: damaged or edited since): restore it, or confirm anew under another "
            "name (search confirm --name NEW)"
        )
    return path


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else ""


def job_file(job: Job, settings: Settings, log: Path, path: Path) -> Path:
    """Write what `serve` reads."""
    path.write_text(json.dumps({"job": job.to_data(), "settings": asdict(settings), "log": str(log)}))
    return path


if __name__ == "__main__":
    sys.exit(serve())
