"""The `search run` driver: the one process that writes the study. Re-running it after any stop is the resume.

Order of work: start the executor (a trial that cannot fit stops the run here, before anything is created), lock
the study, create or load it (refusing incompatible changes), reconcile what a dead driver left RUNNING, decode the
datasets into the machine's image cache, plan the shared stems (`search.planning.plan`), then keep the executor's slots
full:
stems first (they unlock many points), then points that continue, then new points in grid_key order. Each result is
recorded as it comes back; failures are re-queued while they have attempts left; with `halving:` a point stops at
each rung until its group has been ranked there (`search.planning.halving`). Ctrl-C/SIGTERM stop running trials, record
them as `interrupted` (not an attempt) and exit 130.
"""

from __future__ import annotations

import dataclasses
import signal
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState
from rich.console import Console

from search.planning.databind import DataChanged, bindings, check_data, check_origin, current_manifests
from search.planning.halving import Halving, RungBook
from search.planning.options import RunOptions
from search.planning.plan import Plan, build_plan
from search.planning.progress import JobClock, RunProgress, run_summary
from search.records import record
from search.records.paths import trial_folder
from search.records.storage import DriverLock, StudyError, one_line
from search.records.store import ArtifactStore
from search.records.study import GridStudy
from search.run.dispatch import Completion, Executor, LocalExecutor, RayExecutor
from search.run.scheduler import PointState, Scheduler, State, StemState
from search.run.worker import Job, JobKind, OutcomeStatus, Settings
from search.space.grid import GridSpec
from trainer.failures import FailureKind, failure_kind
from trainer.prefix import PointKind

EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 130
POLL_SECONDS = 3.0


def run_study(spec: GridSpec, options: RunOptions, console: Console) -> int:
    """Run every point of `spec` that is not done, as `options` (`search.planning.options.resolve`) say; return the exit
    code (0, 1 or 130)."""
    settings = Settings(
        options.artifacts,
        options.cache_dir,
        options.scratch,
        threads=int(max(1, options.resources["cpus_per_trial"])),  # every executor: a trial's torch threads
    )
    _STOP.clear()
    previous = {sig: signal.signal(sig, _request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return _run(spec, options, settings, console)
    except KeyboardInterrupt:  # before any trial started: nothing to record
        console.print("interrupted before any trial started; run the same command to resume")
        return EXIT_INTERRUPTED
    finally:
        for sig, handler in previous.items():  # after a stop, late signals must not kill the exit
            signal.signal(sig, signal.SIG_IGN if "requested" in _STOP else handler)


def _run(spec: GridSpec, options: RunOptions, settings: Settings, console: Console) -> int:
    current = current_manifests(spec.datasets, stop_point)  # first: unreadable data, before anything is made
    if options.origin is not None and not options.accept_data_change:
        try:
            check_origin(spec.name, options.origin, current)  # a new confirmation: refused before it exists
        except DataChanged as exc:
            raise StudyError(str(exc)) from None
    executor = _make_executor(options, settings)  # then: a trial that cannot fit is refused, nothing made
    for sig in (signal.SIGINT, signal.SIGTERM):  # again: ray.init installs its own
        signal.signal(sig, _request_stop)
    try:
        executor.start()  # the local worker imports torch while the lock, the study and the caches are made
        stop_point()
        with DriverLock(options.storage, spec.name):  # then: a refused second driver makes nothing either
            store = ArtifactStore(settings.store)
            store.check_writable()

            def bind_data(study: optuna.Study) -> None:
                try:
                    for line in check_data(study, current, store, options.accept_data_change, options.origin):
                        console.print(f"warning: data changed, accepted (--accept-data-change, recorded): {line}")
                except DataChanged as exc:
                    raise StudyError(str(exc)) from None

            stop_point()
            grid = GridStudy.open(spec, options.storage, options.out_dir, store, bind_data)
            console.print(f"{spec.name}: study in {options.storage}, trial folders in {store.uri}/trials/")
            stop_point()
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
            stop_point()
            return run.drive()
    finally:
        executor.close()


class Run:
    """One `search run`: the scheduler's states (`search.run.scheduler`), the jobs in flight, and what the study and
    the progress display are told as results come back."""

    def __init__(self, grid: GridStudy, executor: Executor, console: Console, options: RunOptions) -> None:
        self.grid, self.executor, self.console, self.options = grid, executor, console, options
        self.spec, self.store = grid.spec, grid.store
        record.record_run(grid.study, options.share, executor.slots, options.resources)
        self.clock = JobClock()
        self.tally = grid.tally()
        self.plan: Plan = build_plan([p.point for p in self.tally.pending], self.spec.fixed, options.share)
        self.halving = Halving.of(self.spec.halving, self.spec.objective)
        rungs = RungBook(self.halving, self.spec, grid.trials(), self.store) if self.halving else None
        if rungs is not None:
            for point in self.tally.given_up:
                rungs.leave(point)
        complete = grid.trials((TrialState.COMPLETE,))
        self.folders = {  # the trial folder of each complete point: what a matched control reads
            key: trial_folder(t.number, key) for t in complete if (key := record.grid_key_of(t)) is not None
        }
        self.waits_for = matched_configurations(self.spec)
        self.with_controls = set(self.waits_for.values())
        self.scheduler = Scheduler(
            self.tally.pending,
            self.plan,
            self.spec.max_attempts,
            options.max_trials,
            rungs,
            self.waits_for,
            set(self.folders),
            self.spec.order,
        )
        self.points, self.stems = self.scheduler.points, self.scheduler.stems
        for state in self.points.values():  # first what each point's own earlier try did, then its stems
            if state.pending.previous:
                self.scheduler.resumed(state, self.store.folder(state.pending.previous).read_metrics())
        for stem_state in self.stems.values():
            folder = self.store.folder(stem_state.stem.folder)
            stored = folder.read_result()
            if stored is not None and stored.get("stem", {}).get("epochs") == stem_state.stem.epochs:
                self.scheduler.stem_done(stem_state, folder.read_metrics())
        self.bound = bindings(record.bound_data(grid.study))  # what every job must read
        self.inflight: dict[str, State] = {}  # job folder -> whose job it is
        self.disk_full: str | None = None  # the first disk-full failure: nothing new starts after it
        self.failed_here: set[str] = set()
        self.ended_here: set[str] = set()  # complete or stopped by halving
        self.last_poll = 0.0

    # -- the loop ------------------------------------------------------------------------------------------
    def drive(self) -> int:
        complete = [t.value for t in self.grid.trials((TrialState.COMPLETE,)) if t.value is not None]
        best = self.spec.objective.best(complete)
        self.progress = RunProgress(
            self.console,
            self.spec.name,
            len(self.spec.points),
            len(complete),
            self.spec.objective,
            self.executor.slots,
            best,
        )
        with self.progress:
            try:
                self._decide_rungs()
                while True:
                    stop_point()
                    free = self.executor.slots - self.scheduler.running()
                    for state in [] if self.disk_full else self.scheduler.ready(free):
                        self._submit(self._job(state), state)
                    if self.scheduler.running() == 0:
                        break  # nothing runs and nothing can start: every point ended (or waits on --max-trials)
                    for done in self.executor.wait(timeout=0.5):
                        self._finished(done)
                    self._poll()
                    self.progress.update(self.scheduler.waiting())
            except KeyboardInterrupt:
                self.executor.cancel_all()
                # From the study, not what this run holds: the signal may land between creating and submitting.
                completed, stopped = self.grid.reconcile("interrupted: the driver was stopped", FailureKind.INTERRUPTED)
                finished = f" ({completed} finished before the stop: recorded COMPLETE)" if completed else ""
                self.console.print(
                    f"interrupted: {stopped} running trials stopped{finished}; run the same command to resume"
                )
                return EXIT_INTERRUPTED
        if (start_up := self.clock.start_up()) is not None:  # what the dry-run adds to a run's wall time
            record.record_start_seconds(self.grid.study, start_up)
        self.console.print(run_summary(self.spec, self.grid.trials(), self.plan, self.options.storage))
        if self.disk_full:
            self.console.print(
                f"stopped starting trials: a disk is full ({self.disk_full}); free space and run the same command "
                "to go on (no attempt was used)"
            )
        return EXIT_FAILED if self.disk_full or self.failed_here - self.ended_here else EXIT_OK

    def nothing_to_run(self) -> str:
        t = self.tally
        if t.given_up:
            return (
                f"{self.spec.name}: nothing to run: {len(t.done)} points complete, {len(t.pruned)} stopped "
                f"by halving, {len(t.given_up)} failed all {self.spec.max_attempts} attempts "
                f"(`search status --study {self.spec.name}` lists why)"
            )
        return (
            f"{self.spec.name}: all {len(self.spec.points)} points are finished ({len(t.done)} complete, "
            f"{len(t.pruned)} stopped by halving); nothing to run"
        )

    # -- starting jobs ------------------------------------------------------------------------------------
    def _job(self, state: State) -> Job:
        if isinstance(state, StemState):
            return self._stem_job(state)
        return self._point_job(state)

    def _stem_job(self, state: StemState) -> Job:
        stem = state.stem
        parent = self.scheduler.usable_stem(stem.parent)
        folder = self.stems[parent].stem.folder if parent else None
        point = self.points[stem.representative].pending.point
        groups = [self.points[k].pending.point.config() for k in stem.groups]
        return Job(
            JobKind.STEM,
            f"stem {stem.key[:8]}",
            point.config(),
            stem.folder,
            until=stem.epochs,
            groups=groups,
            start_from=folder,
            stem=folder,
            whole_gpu=state.whole_gpu,
            binding=self.bound.get(self.spec.dataset_of(point)),
        )

    def _point_job(self, state: PointState) -> Job:
        point = state.pending.point
        start, stem = self.scheduler.start_of(state)
        total = point.schedule.epochs
        until = (
            self.halving.next_rung(len(state.history), total)
            if self.halving and point.kind == PointKind.PROXY
            else None
        )
        number = state.number
        if number is None:
            number = self.grid.start(state.pending)
            self.scheduler.opened(state, number, self.grid.report(number, state.history))
        return Job(
            JobKind.TRIAL,
            f"trial {number}",
            point.config(),
            trial_folder(number, point.grid_key),
            until=until,
            start_from=start,
            stem=stem,
            whole_gpu=state.pending.whole_gpu,
            number=number,
            grid_key=point.grid_key,
            binding=self.bound.get(self.spec.dataset_of(point)),
            matched=self.folders.get(self.waits_for.get(point.grid_key, "")),
            keep_maps=point.grid_key in self.with_controls,
        )

    def _submit(self, job: Job, state: State) -> None:
        self.clock.start(job.folder)
        self.scheduler.started_job(state)
        self.inflight[job.folder] = state
        self.progress.started(job.label, job.until or job.config.epochs)
        try:
            self.executor.submit(job)
        except OSError as exc:  # e.g. a full disk: this job fails, the study goes on
            self._finished(Completion.failed(job, f"cannot start the job: {exc}", failure_kind(exc)))

    # -- what came back -----------------------------------------------------------------------------------
    def _finished(self, done: Completion) -> None:
        if done.failure is FailureKind.DISK_FULL and self.disk_full is None:
            self.disk_full = one_line(done.reason or "disk full", 200)
        state = self.inflight.pop(done.job.folder)
        self.clock.end(done.job.folder)
        if isinstance(state, StemState):
            self._stem_finished(done, state)
        else:
            self._trial_finished(done, state)

    def _stem_finished(self, done: Completion, state: StemState) -> None:
        if done.outcome is not None:
            self.scheduler.stem_done(state, self.store.folder(state.stem.folder).read_metrics())
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
        failed = self.scheduler.stem_failed(state, done.failure or FailureKind.ERROR)
        then = "its points go on without it" if failed else "retrying it"
        self.progress.finished(done.job.label, False, None, False, f"FAIL {done.reason} ({then})", counted=False)

    def _trial_finished(self, done: Completion, state: PointState) -> None:
        job, number, outcome = done.job, state.number, done.outcome
        if number is None:
            raise RuntimeError(f"{job.label} finished without a trial of its own")
        if outcome is not None:
            self.scheduler.progressed(state, outcome.history)
        if outcome is not None and outcome.status == OutcomeStatus.PAUSED:
            self.scheduler.reported(state, self.grid.report(number, state.history, state.reported))
            self.scheduler.paused(state)
            self.progress.finished(
                job.label, True, None, False, f"reached epoch {len(state.history)} (rung)", counted=False
            )
            self._decide_rungs()
            return
        if outcome is not None:  # where it ran, beside what it measured
            metrics = {**outcome.metrics, **record.placement(outcome.node, outcome.gpu_ids)}
            reason = self.grid.finish(number, metrics, state.history)
        else:
            reason = done.reason or "unknown failure"
            self.grid.report(number, self.store.folder(job.folder).read_metrics(), state.reported)
            self.grid.fail(number, reason, done.failure or FailureKind.ERROR)
        shown = " ".join(f"{k}={v}" for k, v in state.pending.point.params.items())
        if reason is None and outcome is not None:
            self.scheduler.completed(state)
            self.folders[state.key] = job.folder
            self.ended_here.add(state.key)
            value = outcome.metrics.get(self.spec.objective.metric)
            self.progress.finished(
                job.label,
                True,
                value,
                self.progress.improves(value),
                f"COMPLETE {self.spec.objective.metric}={value:.4f} · {shown}",
            )
            return
        self.failed_here.add(state.key)
        attempt = f"attempt {state.pending.attempt}/{self.spec.max_attempts}"
        self.progress.finished(job.label, False, None, False, f"FAIL ({attempt}) {reason} · {shown}")
        folder = self.store.folder(job.folder)
        previous = job.folder if folder.has_checkpoint() else state.pending.previous
        rows = lambda: self.store.folder(previous).read_metrics() if previous else []  # noqa: E731
        retried = self.scheduler.failed(state, done.failure or FailureKind.ERROR, previous, rows)
        if not retried:
            self._decide_rungs()

    def _decide_rungs(self) -> None:
        for state, rung, reason in self.scheduler.rung_decisions():
            number = state.number
            if number is None:  # stopped right after its stem: it still gets its record
                number = self.grid.start(state.pending)
                self.scheduler.opened(state, number, 0)
            self.grid.prune(number, rung, reason, state.history)
            self.scheduler.ended(state)
            self.ended_here.add(state.key)
            self.progress.finished(
                f"trial {state.number}", True, None, False, f"PRUNED {reason}", counted=False, running=False
            )

    def _poll(self) -> None:
        """Report the epochs running trials have done since the last look (optuna-dashboard draws them live)."""
        if time.monotonic() - self.last_poll < POLL_SECONDS:
            return
        self.last_poll = time.monotonic()
        for folder, state in self.inflight.items():
            rows = self.store.folder(folder).read_metrics()
            if isinstance(state, StemState):
                self.progress.epoch(f"stem {state.stem.key[:8]}", len(rows))
            elif state.number is not None:
                self.progress.epoch(f"trial {state.number}", len(rows))
                if rows and rows[-1]["epoch"] > state.reported:
                    self.scheduler.reported(state, self.grid.report(state.number, rows, state.reported))


def _make_executor(options: RunOptions, settings: Settings) -> Executor:
    cpus, gpus = options.resources["cpus_per_trial"], options.resources["gpus_per_trial"]
    if options.executor == "local":
        return LocalExecutor(settings, options.out_dir / "logs", gpus)
    return RayExecutor(options.ray_address, cpus, gpus, options.max_concurrent, settings)


def _prepare_caches(run: Run, settings: Settings, console: Console) -> None:
    """Decode every dataset the pending points need into this machine's cache before the first trial, so that
    the first trials do not all race to build it (workers on other machines build their own, under a lock)."""
    if settings.cache_dir is None:
        return
    from search.planning.progress import cache_progress
    from trainer.config import DatasetConfig
    from trainer.data.cache import ensure
    from trainer.errors import DataError

    needed = {(json_key(p.pending.point.dataset), p.pending.point.setting("image_size")) for p in run.points.values()}
    for dataset, size in sorted(needed):
        config = DatasetConfig(**dict(dataset))
        try:
            with cache_progress(console, f"decoding {config.kind} at {size} px") as progress:

                def shown(done: int, total: int) -> None:
                    progress(done, total)
                    stop_point()  # a long decode stops at the next chunk

                ensure(config, size, Path(settings.cache_dir), shown)
        except DataError as exc:  # its trials will fail with the same reason, and the others go on
            console.print(f"warning: {config.kind} dataset cannot be decoded: {exc}")
        except OSError as exc:
            console.print(
                f"warning: decoded-image cache unusable in {settings.cache_dir} ({exc}); trials decode "
                "images themselves"
            )
            return


def matched_configurations(spec: GridSpec) -> dict[str, str]:
    """Each matched control's grid_key -> its configuration's (the point with every setting the same and no
    control), for the spaces that have matched controls (a confirmation's)."""
    from trainer.config import MATCHED_CONTROLS

    controls = [p for p in spec.points if p.setting("control") in MATCHED_CONTROLS]
    if not controls:
        return {}
    configs = {
        p.config().digest(): p.grid_key
        for p in spec.points
        if p.kind == PointKind.PROXY and p.setting("control") in (None, "none")
    }
    out = {}
    for point in controls:
        key = configs.get(dataclasses.replace(point.config(), control="none").digest())
        if key is not None:
            out[point.grid_key] = key
    return out


def json_key(dataset: dict) -> tuple:
    return tuple(sorted(dataset.items()))


_STOP: set[str] = set()  # "requested" once a stop signal came


def _request_stop(signum: int, frame: object) -> None:
    """Ctrl-C or SIGTERM: record the request, nothing more. Installed whatever the driver inherited (a driver started
    with `&` from a script inherits SIGINT ignored). Raising from here could land anywhere (inside logging's lock, a
    finaliser, an SQLite call), so the driver stops where it chooses (`stop_point`): between the steps of its start
    and at every turn of its loop, which waits at most half a second."""
    _STOP.add("requested")


def stop_point() -> None:
    """Where the driver may stop: raise KeyboardInterrupt once a stop was requested."""
    if "requested" in _STOP:
        raise KeyboardInterrupt
