"""The `search run` driver: the one process that writes the study. Re-running it after any stop is the resume.

Order of work: start the executor (a trial that cannot fit stops the run here, before anything is created), lock
the study, create or load it (refusing incompatible changes), reconcile what a dead driver left RUNNING, decode the
datasets into the machine's image cache, plan the shared stems (`search.plan`), then keep the executor's slots full:
stems first (they unlock many points), then points that continue, then new points in grid_key order. Each result is
recorded as it comes back; failures are re-queued while they have attempts left; with `halving:` a point stops at
each rung until its group has been ranked there (`search.halving`). Ctrl-C/SIGTERM stop running trials, record
them as `interrupted` (not an attempt) and exit 130.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.trial import TrialState
from rich.console import Console

from search.databind import DataChanged, check_data
from search.dispatch import Completion, Executor, LocalExecutor, RayExecutor
from search.grid import GridSpec
from search.halving import Halving, configuration, decide_configurations
from search.plan import Plan, Stem, build_plan
from search.progress import RunProgress, run_summary
from search.storage import DriverLock, StudyError, one_line
from search.store import ArtifactStore
from search.study import GridStudy
from search.tally import PendingPoint, trial_folder
from search.worker import Job, Settings
from trainer.failures import failure_kind
from trainer.files import default_cache_dir

EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 130
POLL_SECONDS = 3.0


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
    share: bool = True
    artifacts: str | None = None
    cache_dir: str | None = field(default_factory=lambda: str(default_cache_dir()))
    scratch: str | None = None
    accept_data_change: bool = False


def run_study(spec: GridSpec, options: RunOptions, console: Console) -> int:
    """Run every point of `spec` that is not done; return the exit code (0, 1 or 130)."""
    cpus = options.cpus_per_trial if options.cpus_per_trial is not None else spec.resources["cpus_per_trial"]
    settings = Settings(
        options.artifacts or spec.data.get("artifacts") or str(options.out_dir),
        options.cache_dir,
        options.scratch,
        threads=int(max(1, cpus)),  # every executor: a trial's torch threads are its CPUs
    )
    _STOP.clear()
    previous = {sig: signal.signal(sig, _raise_interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return _run(spec, options, settings, console)
    except KeyboardInterrupt:  # before any trial started: nothing to record
        console.print("interrupted before any trial started; run the same command to resume")
        return EXIT_INTERRUPTED
    finally:
        for sig, handler in previous.items():  # after a stop, late signals must not kill the exit
            signal.signal(sig, signal.SIG_IGN if "requested" in _STOP else handler)


def _run(spec: GridSpec, options: RunOptions, settings: Settings, console: Console) -> int:
    executor = _make_executor(spec, options, settings)  # first: a trial that cannot fit is refused, nothing made
    for sig in (signal.SIGINT, signal.SIGTERM):  # again: ray.init installs its own
        signal.signal(sig, _raise_interrupt)
    try:
        with DriverLock(options.storage, spec.name):  # then: a refused second driver makes nothing either
            store = ArtifactStore(settings.store)
            store.check_writable()

            def bind_data(study: optuna.Study) -> None:
                try:
                    for line in check_data(study, spec.data["datasets"], store, options.accept_data_change):
                        console.print(f"warning: data changed, accepted (--accept-data-change, recorded): {line}")
                except DataChanged as exc:
                    raise StudyError(str(exc)) from None

            grid = GridStudy.open(spec, options.storage, options.out_dir, store, bind_data)
            console.print(f"{spec.name}: study in {options.storage}, trial folders in {store.uri}/trials/")
            completed, orphaned = grid.reconcile()
            if completed or orphaned:
                console.print(
                    f"reconciled trials a stopped driver left running: {completed} complete, "
                    f"{orphaned} orphaned (will re-run)"
                )
            run = Run(grid, executor, console, options)
            if not run.points:
                console.print(run.nothing_to_run())
                return EXIT_FAILED if run.tally.given_up else EXIT_OK
            _prepare_caches(run, settings, console)
            return run.drive()
    finally:
        executor.close()


@dataclass
class PointState:
    """A point this run must finish: its pending try, its open trial, and the epochs it is known to have done."""

    pending: PendingPoint
    number: int | None = None
    history: list[dict] = field(default_factory=list)  # rows of the folder it starts from, then its own
    reported: int = 0  # the last epoch reported to the study
    running: bool = False
    ended: bool = False
    tries: int = 0  # in this run: at most max_attempts, whatever the cause
    previous_epochs: int = 0  # how far its last try got


@dataclass
class StemState:
    stem: Stem
    attempts: int = 0
    running: bool = False
    done: bool = False
    failed: bool = False
    history: list[dict] = field(default_factory=list)


class Run:
    """One `search run`: the points to finish, the stems under them, and what is running."""

    def __init__(self, grid: GridStudy, executor: Executor, console: Console, options: RunOptions) -> None:
        self.grid, self.executor, self.console, self.options = grid, executor, console, options
        self.spec, self.store = grid.spec, grid.store
        grid.study.set_user_attr("share", options.share)  # for `search status`: its stems, and its ETA
        grid.study.set_user_attr("slots", executor.slots)
        self.tally = grid.tally()
        self.points = {p.point.grid_key: PointState(p) for p in self.tally.pending}
        self.plan: Plan = build_plan([p.point for p in self.tally.pending], self.spec.data["fixed"], options.share)
        self.stems = {k: StemState(s) for k, s in self.plan.stems.items()}
        for stem_state in self.stems.values():
            folder = self.store.folder(stem_state.stem.folder)
            record = folder.read_result()
            if record is not None and record.get("stem", {}).get("epochs") == stem_state.stem.epochs:
                stem_state.done, stem_state.history = True, folder.read_metrics()
        for state in self.points.values():
            if state.pending.previous:
                state.history = self.store.folder(state.pending.previous).read_metrics()
                state.previous_epochs = len(state.history)
        self.halving = Halving.of(self.spec.halving, self.spec.objective)
        self.rungs = _RungBook(self.halving, self.spec, grid.trials(), self.store) if self.halving else None
        if self.rungs is not None:
            for point in self.tally.given_up:
                self.rungs.leave(point)
        self.started = 0
        self.disk_full: str | None = None  # the first disk-full failure: nothing new starts after it
        self.failed_here: set[str] = set()
        self.ended_here: set[str] = set()  # complete or stopped by halving
        self.last_poll = 0.0

    # -- the loop ------------------------------------------------------------------------------------------
    def drive(self) -> int:
        complete = [t.value for t in self.grid.trials((TrialState.COMPLETE,)) if t.value is not None]
        metric, direction = self.spec.objective
        best = (max if direction == "maximize" else min)(complete) if complete else None
        self.progress = RunProgress(
            self.console,
            self.spec.name,
            len(self.spec.points),
            len(complete),
            metric,
            self.executor.slots,
            best,
            direction,
        )
        with self.progress:
            try:
                self._decide_rungs()
                while True:
                    if "requested" in _STOP:
                        raise KeyboardInterrupt
                    for job in self._next_jobs(self.executor.slots - self._running()):
                        self._submit(job)
                    if self._running() == 0:
                        break  # nothing runs and nothing can start: every point ended (or waits on --max-trials)
                    for done in self.executor.wait(timeout=0.5):
                        self._finished(done)
                    self._poll()
                    self.progress.update(self._waiting())
            except KeyboardInterrupt:
                self.executor.cancel_all()
                # From the study, not what this run holds: the signal may land between creating and submitting.
                completed, stopped = self.grid.reconcile("interrupted: the driver was stopped", "interrupted")
                finished = f" ({completed} finished before the stop: recorded COMPLETE)" if completed else ""
                self.console.print(
                    f"interrupted: {stopped} running trials stopped{finished}; run the same command to resume"
                )
                return EXIT_INTERRUPTED
        self.console.print(run_summary(self.spec, self.grid.trials(), self.plan, self.options.storage))
        if self.disk_full:
            self.console.print(
                f"stopped starting trials: a disk is full ({self.disk_full}); free space and run the same command "
                "to go on (no attempt was used)"
            )
        return EXIT_FAILED if self.disk_full or self.failed_here - self.ended_here else EXIT_OK

    def nothing_to_run(self) -> str:
        t = self.tally
        lines = [
            f"{self.spec.name}: all {len(self.spec.points)} points are finished ({len(t.done)} complete, "
            f"{len(t.pruned)} stopped by halving); nothing to run"
        ]
        if t.given_up:
            lines[0] = (
                f"{self.spec.name}: nothing to run: {len(t.done)} points complete, {len(t.pruned)} stopped "
                f"by halving, {len(t.given_up)} failed all {self.spec.max_attempts} attempts "
                f"(`search status --study {self.spec.name}` lists why)"
            )
        return lines[0]

    def _running(self) -> int:
        return sum(s.running for s in self.stems.values()) + sum(s.running for s in self.points.values())

    def _waiting(self) -> int:
        return sum(1 for s in self.points.values() if not s.ended and not s.running)

    # -- what can run -------------------------------------------------------------------------------------
    def _next_jobs(self, count: int) -> list[Job]:
        """Up to `count` jobs that can start now: stems (shallow first), then points that continue, then new ones;
        none once a disk filled up (each new try would add a folder to the full disk)."""
        jobs: list[Job] = []
        if self.disk_full:
            return jobs
        for state in sorted(self.stems.values(), key=lambda s: (self.plan.depth(s.stem.key), s.stem.key)):
            if len(jobs) < count and self._stem_ready(state):
                jobs.append(self._stem_job(state))
        for key in sorted(self.points, key=lambda k: (self.points[k].number is None, k)):
            if len(jobs) < count and self._point_ready(self.points[key]):
                jobs.append(self._point_job(self.points[key]))
        return jobs

    def _stem_ready(self, state: StemState) -> bool:
        if state.running or state.done or state.failed:
            return False
        parent = self._usable_stem(state.stem.parent)
        if parent is not None and not self.stems[parent].done:
            return False
        return any(k in self.points and not self.points[k].ended for k in state.stem.members)

    def _usable_stem(self, key: str | None) -> str | None:
        """`key`, or the nearest ancestor that has not failed for good."""
        while key is not None and self.stems[key].failed:
            key = self.stems[key].stem.parent
        return key

    def _start(self, state: PointState) -> tuple[str | None, str | None]:
        """The folder a point continues (its last try's, or its stem's when that is further on) and the stem
        whose shared proxy-step inputs it may use; (None, None) with nothing to start from."""
        key = self._usable_stem(self.plan.parent.get(state.pending.point.grid_key))
        stem = self.stems[key] if key is not None and self.stems[key].done else None
        stem_folder = stem.stem.folder if stem else None
        stem_epochs = len(stem.history) if stem else -1
        if stem is not None and stem_epochs > len(state.history):  # what it knows of itself only ever grows
            state.history = list(stem.history)
        if state.pending.previous and state.previous_epochs >= stem_epochs:
            return state.pending.previous, stem_folder
        return stem_folder, stem_folder  # (its own folder, once it has a checkpoint, always comes first)

    def _point_ready(self, state: PointState) -> bool:
        if state.running or state.ended:
            return False
        stem = self._usable_stem(self.plan.parent.get(state.pending.point.grid_key))
        if stem is not None and not self.stems[stem].done and state.pending.previous is None:
            return False  # its stem will do the start of its training
        self._start(state)
        if self.rungs and self.rungs.blocked(state.pending.point, len(state.history)):
            return False
        return not (
            self.options.max_trials is not None and state.number is None and self.started >= self.options.max_trials
        )

    def _stem_job(self, state: StemState) -> Job:
        stem = state.stem
        parent = self._usable_stem(stem.parent)
        folder = self.stems[parent].stem.folder if parent else None
        config = self.points[stem.representative].pending.point.config()
        groups = [self.points[k].pending.point.config() for k in stem.groups]
        return Job(
            "stem",
            f"stem {stem.key[:8]}",
            config,
            stem.folder,
            until=stem.epochs,
            groups=groups,
            start_from=folder,
            stem=folder,
        )

    def _point_job(self, state: PointState) -> Job:
        point = state.pending.point
        start, stem = self._start(state)
        total = point.schedule.epochs
        until = self.halving.next_rung(len(state.history), total) if self.halving and point.kind == "proxy" else None
        if state.number is None:
            state.number = self.grid.start(state.pending)
            self.started += 1
            state.reported = self.grid.report(state.number, state.history)
        return Job(
            "trial",
            f"trial {state.number}",
            point.config(),
            trial_folder(state.number, point.grid_key),
            until=until,
            start_from=start,
            stem=stem,
            gpus=1.0 if state.pending.whole_gpu else 0.0,
            number=state.number,
            grid_key=point.grid_key,
        )

    def _submit(self, job: Job) -> None:
        if job.kind == "stem":
            self.stems[job.folder.split("/", 1)[1]].running = True
        else:
            self.points[str(job.grid_key)].running = True
        self.progress.started(job.label, job.until or job.config.epochs)
        try:
            self.executor.submit(job)
        except OSError as exc:  # e.g. a full disk: this job fails, the study goes on
            self._finished(Completion(job, reason=f"cannot start the job: {exc}", failure=failure_kind(exc)))

    # -- what came back -----------------------------------------------------------------------------------
    def _finished(self, done: Completion) -> None:
        job = done.job
        if done.kind == "disk_full" and self.disk_full is None:
            self.disk_full = one_line(done.reason or "disk full", 200)
        if job.kind == "stem":
            self._stem_finished(done)
        else:
            self._trial_finished(done)

    def _stem_finished(self, done: Completion) -> None:
        state = self.stems[done.job.folder.split("/", 1)[1]]
        state.running = False
        if done.outcome is not None:
            state.done = True
            state.history = self.store.folder(state.stem.folder).read_metrics()
            self.progress.finished(
                done.job.label,
                True,
                None,
                False,
                f"stem of {len(state.stem.members)} points: {state.stem.epochs} epochs shared",
                counted=False,
            )
            self._decide_rungs()
            return
        state.attempts += done.kind not in ("disk_full", "interrupted")
        state.failed = state.attempts >= self.spec.max_attempts
        then = "its points go on without it" if state.failed else "retrying it"
        self.progress.finished(done.job.label, False, None, False, f"FAIL {done.reason} ({then})", counted=False)

    def _trial_finished(self, done: Completion) -> None:
        job, key = done.job, str(done.job.grid_key)
        state = self.points[key]
        number = state.number
        if number is None:
            raise RuntimeError(f"{job.label} finished without a trial of its own")
        state.running = False
        metric = self.spec.objective[0]
        outcome = done.outcome
        if outcome is not None:
            state.history = outcome.get("history") or state.history
        if outcome is not None and outcome["status"] == "paused":
            state.reported = self.grid.report(number, state.history, state.reported)
            self.progress.finished(
                job.label, True, None, False, f"reached epoch {len(state.history)} (rung)", counted=False
            )
            self._decide_rungs()
            return
        if outcome is not None:  # where it ran, beside what it measured
            metrics = {**outcome["metrics"], "ray_node": outcome.get("node"), "gpu_ids": outcome.get("gpu_ids")}
            reason = self.grid.finish(number, metrics, state.history)
        else:
            reason = done.reason or "unknown failure"
            self.grid.report(number, self.store.folder(job.folder).read_metrics(), state.reported)
            self.grid.fail(number, reason, done.kind)
        shown = " ".join(f"{k}={v}" for k, v in state.pending.point.params.items())
        if reason is None and outcome is not None:
            state.ended = True
            self.ended_here.add(key)
            value = outcome["metrics"].get(metric)
            self.progress.finished(
                job.label, True, value, self.progress.improves(value), f"COMPLETE {metric}={value:.4f} · {shown}"
            )
            return
        pending = state.pending
        self.failed_here.add(key)
        self.progress.finished(
            job.label,
            False,
            None,
            False,
            f"FAIL (attempt {pending.attempt}/{self.spec.max_attempts}) {reason} · {shown}",
        )
        counted = done.kind not in ("disk_full", "oom")
        previous = job.folder if self.store.folder(job.folder).has_checkpoint() else pending.previous
        tries = state.tries + (done.kind != "oom")  # a shared GPU's OOM is retried once more, on a whole GPU
        if (pending.attempt < self.spec.max_attempts or not counted) and tries < self.spec.max_attempts:
            attempt = pending.attempt + counted
            whole = pending.whole_gpu or done.kind == "oom"
            history = self.store.folder(previous).read_metrics() if previous else []
            self.points[key] = PointState(
                PendingPoint(pending.point, attempt, previous, whole),
                history=history,
                tries=tries,
                previous_epochs=len(history),
            )
        else:
            state.ended, state.number = True, job.number
            if self.rungs:
                self.rungs.leave(pending.point)
                self._decide_rungs()

    def _decide_rungs(self) -> None:
        if not self.rungs:
            return
        for state in self.points.values():
            if not state.ended:
                self._start(state)  # take in what a finished stem did for it
                self.rungs.known(state.pending.point, state.history)
        for key, (rung, reason) in self.rungs.decide_all().items():
            if key not in self.points or self.points[key].ended:
                continue
            state = self.points[key]
            if state.number is None:  # stopped right after its stem: it still gets its record
                state.number = self.grid.start(state.pending)
            self.grid.prune(state.number, rung, reason, state.history)
            state.ended = True
            self.ended_here.add(key)
            self.progress.finished(
                f"trial {state.number}", True, None, False, f"PRUNED {reason}", counted=False, running=False
            )

    def _poll(self) -> None:
        """Report the epochs running trials have done since the last look (optuna-dashboard draws them live)."""
        if time.monotonic() - self.last_poll < POLL_SECONDS:
            return
        self.last_poll = time.monotonic()
        for key, state in self.points.items():
            if state.running and state.number is not None:
                rows = self.store.folder(trial_folder(state.number, key)).read_metrics()
                self.progress.epoch(f"trial {state.number}", len(rows))
                if rows and rows[-1]["epoch"] > state.reported:
                    state.reported = self.grid.report(state.number, rows, state.reported)
        for stem_state in self.stems.values():
            if stem_state.running:
                rows = self.store.folder(stem_state.stem.folder).read_metrics()
                self.progress.epoch(f"stem {stem_state.stem.key[:8]}", len(rows))


class _RungBook:
    """The values of every proxy point of the space at each rung, and the decisions they allow."""

    def __init__(self, halving: Halving, spec: GridSpec, trials: list, store: ArtifactStore) -> None:
        self.halving = halving
        self.groups: dict[tuple, set[str]] = {}
        self.point_group: dict[str, tuple] = {}
        self.configuration_of: dict[str, str] = {}
        self.values: dict[tuple[str, int], float] = {}
        self.out: dict[str, int] = {}  # grid_key -> rung from which it no longer takes part
        self.decided: set[tuple[tuple, int]] = set()
        for p in spec.points:
            if p.kind == "proxy":
                group = halving.group(p)
                self.groups.setdefault(group, set()).add(p.grid_key)
                self.point_group[p.grid_key] = group
                self.configuration_of[p.grid_key] = configuration(p)
        finished = {}
        for t in trials:
            key = t.user_attrs.get("grid_key")
            if key in self.point_group and t.state in (TrialState.COMPLETE, TrialState.PRUNED):
                finished[key] = t
        for key, t in finished.items():
            for rung in halving.rungs:
                if rung in t.intermediate_values:
                    self.values[(key, rung)] = t.intermediate_values[rung]
            if t.state == TrialState.PRUNED:
                self.out[key] = int(t.user_attrs.get("pruned_at", 0)) + 1
            elif any((key, r) not in self.values for r in halving.rungs):
                rows = store.folder(trial_folder(t.number, key)).read_metrics()
                self.known_key(key, rows)

    def known(self, point, history: list[dict]) -> None:
        if point.grid_key in self.point_group:
            self.known_key(point.grid_key, history)

    def known_key(self, key: str, history: list[dict]) -> None:
        for rung in self.halving.rungs:
            value = self.halving.value(history, rung)
            if value is not None:
                self.values[(key, rung)] = value

    def leave(self, point) -> None:
        """A point that failed all its attempts takes no further part."""
        if point.grid_key in self.point_group:
            self.out[point.grid_key] = 0

    def blocked(self, point, epochs_done: int) -> bool:
        """Whether a point must wait: a rung it has reached is not decided yet for its group."""
        group = self.point_group.get(point.grid_key)
        if group is None:
            return False
        return any(rung <= epochs_done and (group, rung) not in self.decided for rung in self.halving.rungs)

    def decide_all(self) -> dict[str, tuple[int, str]]:
        """Every decision that has become possible: grid_key -> (rung, reason) of the points to stop."""
        stopped: dict[str, tuple[int, str]] = {}
        for group, keys in self.groups.items():
            for rung in self.halving.rungs:
                if (group, rung) in self.decided:
                    continue
                alive = [k for k in keys if self.out.get(k, rung + 1) > rung]
                if any((k, rung) not in self.values for k in alive):
                    break
                values = {k: self.values[(k, rung)] for k in alive}
                for key, reason in decide_configurations(self.halving, rung, values, self.configuration_of).items():
                    self.out[key] = rung + 1
                    stopped[key] = (rung, reason)
                self.decided.add((group, rung))
        return stopped


def _make_executor(spec: GridSpec, options: RunOptions, settings: Settings) -> Executor:
    cpus = options.cpus_per_trial if options.cpus_per_trial is not None else spec.resources["cpus_per_trial"]
    gpus = options.gpus_per_trial if options.gpus_per_trial is not None else spec.resources["gpus_per_trial"]
    if options.executor == "local":
        return LocalExecutor(settings, options.out_dir / "logs", gpus)
    return RayExecutor(options.ray_address, cpus, gpus, options.max_concurrent, settings)


def _prepare_caches(run: Run, settings: Settings, console: Console) -> None:
    """Decode every dataset the pending points need into this machine's cache before the first trial, so that
    the first trials do not all race to build it (workers on other machines build their own, under a lock)."""
    if settings.cache_dir is None:
        return
    from search.progress import cache_progress
    from trainer.cache import ensure
    from trainer.config import DatasetConfig
    from trainer.errors import DataError

    needed = {(json_key(p.pending.point.dataset), p.pending.point.setting("image_size")) for p in run.points.values()}
    for dataset, size in sorted(needed):
        config = DatasetConfig(**dict(dataset))
        try:
            with cache_progress(console, f"decoding {config.kind} at {size} px") as progress:
                ensure(config, size, Path(settings.cache_dir), progress)
        except DataError as exc:  # its trials will fail with the same reason, and the others go on
            console.print(f"warning: {config.kind} dataset cannot be decoded: {exc}")
        except OSError as exc:
            console.print(
                f"warning: decoded-image cache unusable in {settings.cache_dir} ({exc}); trials decode "
                "images themselves"
            )
            return


def json_key(dataset: dict) -> tuple:
    return tuple(sorted(dataset.items()))


_STOP: set[str] = set()  # "requested" once a stop signal came


def _raise_interrupt(signum: int, frame: object) -> None:
    """Ctrl-C or SIGTERM: stop cleanly. Installed whatever the driver inherited (a driver started with `&` from a
    script inherits SIGINT ignored). Only the first signal raises: five quick SIGTERMs end as cleanly as one. The
    loop raises it again if Python swallowed it (an exception in a finaliser or a logging lock is only printed)."""
    if "requested" in _STOP:
        return
    _STOP.add("requested")
    raise KeyboardInterrupt
