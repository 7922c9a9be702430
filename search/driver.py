"""The `search run` driver: the one process that writes the study. Re-running it after any stop is the resume.

Order of work: lock the study, create or load it (refusing incompatible changes), reconcile what a dead driver left
RUNNING, then keep the executor's slots full with pending points, recording each result as it comes back and
re-queueing failures while they have attempts left. Ctrl-C/SIGTERM stop running trials, record them as
`interrupted` (not an attempt) and exit 130.
"""

from __future__ import annotations

import shutil
import signal
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from optuna.trial import TrialState
from rich.console import Console

from search.dispatch import Executor, LocalExecutor, RayExecutor, TrialTask, failure_kind
from search.progress import RunProgress
from search.space import GridSpec
from search.study import DriverLock, GridStudy, PendingPoint, tally, trial_workdir

EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 130
RESUMABLE_FILES = ("checkpoint.pt", "split.json", "metrics.jsonl")


@dataclass
class RunOptions:
    """How to run a space (the `search run` flags)."""

    storage: str
    out_dir: Path
    executor: str = "ray"
    ray_address: str | None = None
    gpus_per_trial: float | None = None
    cpus_per_trial: float | None = None
    max_concurrent: int | None = None
    max_trials: int | None = None


def run_study(spec: GridSpec, options: RunOptions, console: Console) -> int:
    """Run every point of `spec` that has no COMPLETE trial; return the exit code (0, 1 or 130)."""
    with DriverLock(options.out_dir):
        grid = GridStudy.open(spec, options.storage, options.out_dir)
        completed, orphaned = grid.reconcile()
        if completed or orphaned:
            console.print(f"reconciled trials a stopped driver left running: {completed} complete, "
                          f"{orphaned} orphaned (will re-run)")
        queue = deque(grid.pending())
        if options.max_trials is not None:
            queue = deque(list(queue)[: options.max_trials])
        if not queue:
            given_up = tally(spec, grid.trials(), grid.out_dir).given_up
            console.print(f"{spec.name}: nothing to run ({len(spec.points)} points, {len(given_up)} of them failed "
                          f"{spec.max_attempts} times)")
            return EXIT_FAILED if given_up else EXIT_OK
        executor = _make_executor(spec, options)
        previous_term = signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            return _drive(grid, executor, queue, console)
        finally:
            signal.signal(signal.SIGTERM, previous_term)
            executor.close()


def _drive(grid: GridStudy, executor: Executor, queue: deque[PendingPoint], console: Console) -> int:
    spec = grid.spec
    metric, direction = spec.objective
    complete = [t.value for t in grid.trials((TrialState.COMPLETE,))]
    best = (max if direction == "maximize" else min)(complete) if complete else None
    inflight: dict[int, PendingPoint] = {}
    failed_here: set[str] = set()
    completed_here: set[str] = set()
    progress = RunProgress(console, spec.name, len(spec.points), len(complete), metric, executor.slots, best)
    with progress:
        try:
            while queue or inflight:
                while queue and len(inflight) < executor.slots:
                    pending = queue.popleft()
                    number = grid.start(pending)
                    workdir = trial_workdir(grid.out_dir, number, pending.point.grid_key)
                    config = pending.point.config()
                    progress.started(number, workdir, config.epochs)
                    try:
                        _carry_over(pending.previous_workdir, workdir)
                        executor.submit(TrialTask(number, pending.point.grid_key, config.to_dict(), workdir))
                    except OSError as exc:  # e.g. a full disk under --out: this trial fails, the study goes on
                        reason = f"cannot start the trial: {exc}"
                        grid.fail(number, reason, failure_kind(reason))
                        failed_here.add(pending.point.grid_key)
                        _retry(queue, pending, workdir, spec.max_attempts)
                        progress.finished(number, False, None, False, f"FAIL {reason}")
                        continue
                    inflight[number] = pending
                for done in executor.wait(timeout=0.5):
                    number = done.task.number
                    pending = inflight.pop(number)
                    if done.metrics is not None:
                        reason = grid.finish(number, done.metrics)
                    else:
                        reason = done.reason
                        grid.fail(number, reason, done.kind)
                    ok = reason is None
                    (completed_here if ok else failed_here).add(pending.point.grid_key)
                    value = done.metrics.get(metric) if ok else None
                    better = value is not None and (progress.best is None or (
                        value > progress.best if direction == "maximize" else value < progress.best))
                    shown = " ".join(f"{k}={v}" for k, v in pending.point.params.items())
                    if ok:
                        text = f"COMPLETE {metric}={value:.4f} · {shown}"
                    else:
                        text = f"FAIL (attempt {pending.attempt}/{spec.max_attempts}) {reason} · {shown}"
                        _retry(queue, pending, done.task.workdir, spec.max_attempts)
                    progress.finished(number, ok, value, better, text)
                progress.update(len(queue))
        except KeyboardInterrupt:
            executor.cancel_all()
            # From the study, not `inflight`: the signal may land between creating a trial and submitting it.
            completed, stopped = grid.reconcile("interrupted: the driver was stopped", "interrupted")
            finished = f" ({completed} had finished and were recorded)" if completed else ""
            console.print(f"interrupted: {stopped} running trials stopped{finished}; run the same command to resume")
            return EXIT_INTERRUPTED
    return EXIT_FAILED if failed_here - completed_here else EXIT_OK


def _retry(queue: deque[PendingPoint], pending: PendingPoint, workdir: Path, max_attempts: int) -> None:
    """Queue the point again if it has attempts left, resuming from `workdir`."""
    if pending.attempt < max_attempts:
        queue.append(PendingPoint(pending.point, pending.attempt + 1, workdir))


def _make_executor(spec: GridSpec, options: RunOptions) -> Executor:
    if options.executor == "local":
        return LocalExecutor()
    cpus = options.cpus_per_trial if options.cpus_per_trial is not None else spec.resources["cpus_per_trial"]
    gpus = options.gpus_per_trial if options.gpus_per_trial is not None else spec.resources["gpus_per_trial"]
    return RayExecutor(options.ray_address, cpus, gpus, options.max_concurrent)


def _carry_over(previous: Path | None, workdir: Path) -> None:
    """Copy the last try's checkpoint (and what it needs) so the new trial resumes instead of starting over."""
    if previous is None or not (previous / "checkpoint.pt").exists():
        return
    workdir.mkdir(parents=True, exist_ok=True)
    for name in RESUMABLE_FILES:
        if (previous / name).exists():
            shutil.copy2(previous / name, workdir / name)
    if (previous / "proxies").is_dir():
        shutil.copytree(previous / "proxies", workdir / "proxies", dirs_exist_ok=True)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
