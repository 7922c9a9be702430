"""The Optuna study in SQLite and its exactly-once bookkeeping. Only the `search run` driver writes.

A point is done when it has a COMPLETE trial, or a PRUNED one (successive halving stopped it). Trials are created
directly as RUNNING with their params, grid_key and attempt in one transaction (no enqueue/ask, so no WAITING or
zombie trial can exist); their per-epoch objective is reported as intermediate values as it comes; they are finished
with `tell` after their metrics are stored as user attrs. Each parameter keeps one distribution for the life of the
study: numbers use Float/IntDistribution (whose range may grow), categories the choices of the study's first trial.
Trial folders live in the artifact store (`search.store`), named `trials/<number>-<grid_key[:8]>`.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import math
import os
import sqlite3
import time
import typing
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from search.grid import GridSpec, Point, lasting_objects
from search.names import study_name_problem
from search.space import DEFAULT_MAX_POINTS, parse_space
from search.store import ArtifactStore
from search.trials import read_trials
from search.worker import result_tag
from trainer.config import (
    AUGMENTATIONS,
    MATCHED_CONTROLS,
    PIXEL_REPLACEMENTS,
    PROXY_METHODS,
    UNCHANGED_PROXIES,
    TrialConfig,
)
from trainer.files import default_cache_dir

optuna.logging.set_verbosity(optuna.logging.WARNING)

# Attributes the driver keeps on each trial besides the metrics.
INTERNAL_ATTRS = (
    "grid_key",
    "attempt",
    "baseline",
    "kind",
    "fail_reason",
    "fail_kind",
    "pruned_at",
    "prune_reason",
    "whole_gpu",
)
# Failures that are not the trial's fault and do not use up an attempt (across runs; a run retries each point at
# most max_attempts times whatever the cause). "oom": out of GPU memory on a shared GPU (retried on a whole one).
NOT_COUNTED = ("orphaned", "interrupted", "disk_full", "oom")
# Tries that were stopped from outside (Ctrl-C, a dead driver): not failures anywhere a user reads.
STOPPED = ("orphaned", "interrupted")


def optuna_params(point: Point) -> dict[str, Any]:
    """A point's Optuna params: its settings without the seed (a repeat, a user attr: `trial_seed`)."""
    return {k: v for k, v in point.params.items() if k != "seed"}


def trial_seed(trial: FrozenTrial) -> Any:
    """A trial's seed: a user attr (studies made before it moved out of the params keep it as a param)."""
    return trial.params.get("seed", trial.user_attrs.get("seed"))


def shown_state(state: TrialState, fail_kind: object) -> str:
    """A trial's state as people read it: an interrupted or orphaned try is INTERRUPTED, not FAIL."""
    return "INTERRUPTED" if state == TrialState.FAIL and fail_kind in STOPPED else state.name


CLOSED_CHOICES = {
    "cam_method": PROXY_METHODS,
    "pixel_replacement": PIXEL_REPLACEMENTS,
    "augmentation": AUGMENTATIONS,
    "cam_target": ("true", "predicted"),
    "unchanged_proxies": UNCHANGED_PROXIES,
    "control": MATCHED_CONTROLS,
}
UNIT_INTERVAL = ("threshold", "multiply_weight", "wrong_subset", "label_smoothing")


class StudyError(RuntimeError):
    """The study cannot be opened or run as asked; the message says why and what to do."""


def default_storage(study: str) -> str:
    """`sqlite:///runs/<study>.db`; a study name that is not a plain name never becomes a path."""
    if (why := study_name_problem(study)) is not None:
        raise StudyError(why)
    return f"sqlite:///runs/{study}.db"


def open_storage(url: str, create: bool, writable: bool = False) -> optuna.storages.RDBStorage:
    """An RDB storage with a long busy timeout; SQLite files are put in WAL mode so readers never block the
    writer. A creator calls it inside `creating(url)`. With `create=False` (every reader) SQLite is opened read-only
    and nothing is written (unless `writable`: `search report --to-dashboard` stores its figures): a missing file,
    or one without Optuna's schema, is a `StudyError`; one whose schema a starting driver is creating is waited
    for."""
    check_storage_url(url)
    path = _sqlite_path(url)
    if path is None:
        return _rdb_storage(url, create)
    if not create:
        if not path.exists():
            raise StudyError(f"no study database at {path} (run from the project folder, or pass --storage URL)")
        if not _initialized(path):
            wait_for_creator(url)
            if not _initialized(path):
                raise StudyError(f"the study database at {path} has no Optuna schema (not made by `search run`?)")
        try:
            return _rdb_storage(url if writable else _read_only_url(path), create=False)
        except StudyError as exc:
            raise StudyError(
                f"{exc} (a study copied while its driver ran needs its -wal and -shm files beside it; "
                "copy it again after the run, or from a folder you can write)"
            ) from None
    if path.exists():
        check_database_file(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.closing(sqlite3.connect(path)) as conn:  # journal_mode=WAL persists in the file
        conn.execute("PRAGMA journal_mode=WAL")
    return _rdb_storage(url, create)


LOCK_WAIT = 10.0


def check_database_file(path: Path) -> None:
    """Before a driver writes to an existing SQLite file: it must be a sound SQLite database, not locked by another
    process, and hold Optuna's schema or nothing (never another application's tables). Raises `StudyError`."""
    if not path.is_file():
        raise StudyError(f"storage {path} is not a file")
    try:
        with contextlib.closing(sqlite3.connect(path, timeout=LOCK_WAIT)) as conn:
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if tables and not {"studies", "alembic_version"} <= tables:
                raise StudyError(
                    f"{path} holds another application's tables ({', '.join(sorted(tables)[:5])}), not an Optuna "
                    "study: give another --storage file"
                )
            if conn.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise sqlite3.DatabaseError("database disk image is malformed")
            conn.execute("BEGIN IMMEDIATE")  # what the driver's first write needs
            conn.execute("ROLLBACK")
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            raise StudyError(
                f"{path} is locked by another process for over {LOCK_WAIT:g} s ({_holders(path)}); wait for it "
                "or stop it"
            ) from None
        raise StudyError(f"{path} cannot be opened: {exc}") from None
    except sqlite3.DatabaseError as exc:
        raise StudyError(_damaged(path, exc)) from None


def _damaged(path: Path, exc: BaseException) -> str:
    return (
        f"{path} is damaged ({exc}): restore it from a backup (a copy taken while its driver ran needs its -wal "
        f"file beside it), try `sqlite3 {path} .recover`, or run a new study (--study NEW_NAME)"
    )


def _holders(path: Path) -> str:
    """The processes of this machine that have `path` open (Linux /proc), as `pid 12 (python)`."""
    target, found = str(path.resolve()), []
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            if proc.name != str(os.getpid()) and any(os.readlink(fd) == target for fd in (proc / "fd").iterdir()):
                found.append(f"pid {proc.name} ({(proc / 'comm').read_text().strip()})")
    return ", ".join(found) or "a process on another machine, or one this user cannot see"


def check_storage_url(url: str) -> None:
    """Refuse a storage that keeps nothing: an in-memory SQLite database is gone when the run ends."""
    path = _sqlite_path(url)
    if (url.startswith("sqlite:") and path is None) or str(path) in (":memory:", "") or "mode=memory" in url:
        raise StudyError(f"storage {url}: an in-memory database is gone when the run ends; give a file")


@contextlib.contextmanager
def creating(url: str) -> Iterator[None]:
    """Held by a driver while it creates or opens the schema, the study and the space stored on it, which Optuna
    writes in several transactions: a reader that finds one of them missing waits for it (`wait_for_creator`).
    An `flock` on `<db>.init-lock` beside an SQLite file, freed by the kernel if the driver dies."""
    path = _sqlite_path(url)
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".init-lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def wait_for_creator(url: str) -> None:
    """Block while a driver holds `creating(url)`. The lock is opened read-only, and skipped when no driver ever
    made one: a reader never writes."""
    path = _sqlite_path(url)
    if path is None:
        return
    try:
        fd = os.open(path.with_name(path.name + ".init-lock"), os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
    finally:
        os.close(fd)


def _read_only_uri(path: Path) -> str:
    """Read-only SQLite: `mode=ro` where a driver may be writing (the folder is writable, or a copy holds a -wal);
    an immutable snapshot for a read-only copy of a finished study, which SQLite can then read without creating
    the -wal and -shm files it otherwise writes beside the database."""
    writable = os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)
    live = writable or path.with_name(path.name + "-wal").exists()
    return f"file:{path.resolve()}?{'mode=ro' if live else 'immutable=1'}"


def _read_only_url(path: Path) -> str:
    return f"sqlite:///{_read_only_uri(path)}&uri=true"


def _sqlite_path(url: str) -> Path | None:
    return Path(url[len("sqlite:///") :]) if url.startswith("sqlite:///") else None


def _initialized(path: Path) -> bool:
    """Whether Optuna finished creating the schema (the alembic stamp is its last step)."""
    try:
        with contextlib.closing(sqlite3.connect(_read_only_uri(path), uri=True, timeout=30)) as conn:
            return conn.execute("SELECT count(*) FROM alembic_version").fetchone()[0] > 0
    except sqlite3.DatabaseError as exc:
        if "malformed" in str(exc) or "not a database" in str(exc):
            raise StudyError(_damaged(path, exc)) from None
        return False


def _rdb_storage(url: str, create: bool) -> optuna.storages.RDBStorage:
    try:
        storage = optuna.storages.RDBStorage(
            url,
            engine_kwargs={"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {},
            skip_table_creation=not create,
        )
        storage.get_all_studies()  # connect now: a file SQLite cannot open fails here, with its reason
        return storage
    except Exception as exc:  # SQLAlchemy raises many kinds for a bad URL or an unreadable file
        raise StudyError(f"cannot open storage {url}: {exc}") from None


class DriverLock:
    """An exclusive `flock` that belongs to the study (its storage URL and name), wherever its outputs go: one
    driver per study, so two `search run --out A` / `--out B` of one space can never train a point twice. Beside an
    SQLite file it is `<db>.<study>.driver-lock`; for another storage, a file keyed by URL and name in this user's
    cache folder (one machine). The kernel drops it when the holder dies, so a killed driver never leaves a stale
    lock."""

    def __init__(self, storage_url: str, study: str) -> None:
        path = _sqlite_path(storage_url)
        if path is not None:
            self.path = path.with_name(f"{path.name}.{study}.driver-lock")
        else:
            digest = hashlib.sha256(f"{storage_url}\n{study}".encode()).hexdigest()[:24]
            self.path = default_cache_dir() / "driver-locks" / f"{digest}.lock"
        self.fd: int | None = None

    def __enter__(self) -> DriverLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self.fd, 400, 0).decode(errors="replace").strip() or "another process"
            os.close(self.fd)
            raise StudyError(f"another driver is running this study ({holder}; lock {self.path})") from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"pid {os.getpid()} on {os.uname().nodename}, since {time.strftime('%H:%M:%S')}".encode(), 0)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)


@dataclass
class PendingPoint:
    """A point to run now: which attempt this is, the store folder of its last try (to resume from), and whether
    it must have a whole GPU (it ran out of memory on a shared one)."""

    point: Point
    attempt: int
    previous: str | None
    whole_gpu: bool = False


@dataclass
class Tally:
    """Where each point of a space stands in a study."""

    done: set[str]
    pruned: set[str]
    running: set[str]
    attempts: Counter
    pending: list[PendingPoint]
    given_up: list[Point]


def tally(spec: GridSpec, trials: list[FrozenTrial], store: ArtifactStore | None = None) -> Tally:
    """Done (COMPLETE), pruned, running, attempts used (failures that count), pending (attempts left) and given-up
    points. With a `store`, each pending point resumes from its latest try that got as far as a checkpoint."""
    done: set[str] = set()
    pruned: set[str] = set()
    running: set[str] = set()
    attempts: Counter[str] = Counter()
    last: dict[str, str] = {}
    whole_gpu: set[str] = set()
    for trial in trials:
        key = str(trial.user_attrs.get("grid_key"))
        if trial.state == TrialState.COMPLETE:
            done.add(key)
        elif trial.state == TrialState.PRUNED:
            pruned.add(key)
        elif trial.state == TrialState.RUNNING:
            running.add(key)
        elif trial.state == TrialState.FAIL:
            kind = trial.user_attrs.get("fail_kind")
            attempts[key] += kind not in NOT_COUNTED
            if kind == "oom" or trial.user_attrs.get("whole_gpu"):
                whole_gpu.add(key)
            if store is not None and key not in done:
                rel = trial_folder(trial.number, key)
                if store.folder(rel).has_checkpoint():
                    last[key] = rel
    pending, given_up = [], []
    finished = done | pruned
    points = spec.points
    with lasting_objects():
        for p in points:
            key = p.grid_key
            if key in finished:
                continue
            used = attempts.get(key, 0)
            if used < spec.max_attempts:
                pending.append(PendingPoint(p, used + 1, last.get(key), key in whole_gpu))
            else:
                given_up.append(p)
    return Tally(done, pruned, running, attempts, pending, given_up)


def trial_folder(number: int, key: str) -> str:
    """`trials/<number>-<grid_key[:8]>`, relative to the artifact store."""
    return f"trials/{number}-{key[:8]}"


class GridStudy:
    """The driver's handle on one study: create or load it, reconcile, list what to run, record results."""

    def __init__(
        self, study: optuna.Study, storage: optuna.storages.RDBStorage, spec: GridSpec, store: ArtifactStore
    ) -> None:
        self.study, self.storage, self.spec, self.store = study, storage, spec, store
        self.study_id = storage.get_study_id_from_name(study.study_name)
        self._distributions = self._recorded_distributions()
        self._values: dict[str, list] = {}
        self._points = {p.grid_key: p for p in spec.points}
        for point in spec.points:
            for axis, value in point.params.items():
                self._values.setdefault(axis, []).append(value)

    @classmethod
    def open(
        cls,
        spec: GridSpec,
        storage_url: str,
        out_dir: Path,
        store: ArtifactStore | None = None,
        check: Callable[[optuna.Study], None] | None = None,
    ) -> GridStudy:
        """Create the study, or load it and check that `spec` only extends what it already ran, then `check(study)`
        (the data binding), all before the space is written on it. Trial folders go to `store` (default:
        `out_dir`)."""
        store = store or ArtifactStore(out_dir)
        try:
            with creating(storage_url):
                return cls._open(spec, storage_url, out_dir, store, check)
        except optuna.exceptions.StorageInternalError as exc:
            raise StudyError(f"storage {storage_url}: {one_line(str(exc))}") from None

    @classmethod
    def _open(
        cls,
        spec: GridSpec,
        storage_url: str,
        out_dir: Path,
        store: ArtifactStore,
        check: Callable[[optuna.Study], None] | None,
    ) -> GridStudy:
        storage = open_storage(storage_url, create=True)
        study = optuna.create_study(
            storage=storage,
            study_name=spec.name,
            load_if_exists=True,
            direction=optuna.study.StudyDirection[spec.objective[1].upper()],
        )
        stored = study.user_attrs.get("space")
        if stored is not None:
            check_extension(GridSpec(spec.name, stored), spec)
        if study.metric_names != [spec.objective[0]]:  # optuna-dashboard names the objective, not "Objective 0"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names([spec.objective[0]])
        handle = cls(study, storage, spec, store)
        handle._check_categories()
        if check is not None:
            check(study)
        study.set_user_attr("space", spec.data)
        study.set_user_attr("spec_hash", spec.digest())
        study.set_user_attr("out_dir", str(out_dir.resolve()))
        study.set_user_attr("artifacts", store.uri)
        return handle

    # -- bookkeeping ---------------------------------------------------------------------------------------
    def trials(self, states: tuple[TrialState, ...] | None = None) -> list[FrozenTrial]:
        """The study's trials (only `states` if given), read in bulk."""
        return read_trials(self.storage, self.spec.name, states)

    def reconcile(
        self, reason: str = "orphaned: the driver stopped while this trial ran", kind: str = "orphaned"
    ) -> tuple[int, int]:
        """Finish every RUNNING trial (left by a dead driver, or by this one when it is stopped): COMPLETE when its
        folder holds its own `result.json` (this point's config digest, this trial's number and grid_key), else
        FAIL with `reason` and `kind` (neither kind of NOT_COUNTED uses an attempt). Returns (completed, failed)."""
        completed = failed = 0
        for trial in self.trials((TrialState.RUNNING,)):
            key = str(trial.user_attrs.get("grid_key", ""))
            folder = self.store.folder(trial_folder(trial.number, key))
            result = folder.read_result()
            foreign = result is not None and self._foreign(result, trial.number, key)
            if foreign:
                self.report(trial.number, folder.read_metrics())
                self.fail(trial.number, f"{reason}; its folder's result.json is not its own ({foreign})", kind)
                failed += 1
            elif result is not None and self.finish(trial.number, result["metrics"], folder.read_metrics()) is None:
                completed += 1
            elif result is not None:
                failed += 1
            else:
                self.report(trial.number, folder.read_metrics())
                self.fail(trial.number, reason, kind)
                failed += 1
        return completed, failed

    def _foreign(self, result: dict, number: int, key: str) -> str | None:
        """Why `result` is not trial `number`'s of point `key`, or None when it is."""
        point = self._points.get(key)
        if point is None:
            return f"grid_key {key[:8]} is not a point of this space"
        if result.get("config_digest") != point.config().digest():
            return "another config's digest"
        if result.get("tag") != result_tag(number, key):
            return f"written for {result.get('tag')!r}"
        if not isinstance(result.get("metrics"), dict):
            return "no metrics"
        return None

    def tally(self) -> Tally:
        """Where each point stands, resuming from the store's checkpoints."""
        return tally(self.spec, self.trials(), self.store)

    def pending(self) -> list[PendingPoint]:
        """Points not finished that have attempts left, in grid_key order."""
        return self.tally().pending

    def start(self, pending: PendingPoint) -> int:
        """Create the RUNNING trial of a point (params, grid_key and attempt in one transaction); its number. The
        seed is a user attr, not a param: it is a repeat, not a hyperparameter (optuna-dashboard's importance plot
        would rank it among the settings)."""
        point = pending.point
        template = FrozenTrial(
            number=-1,
            state=TrialState.RUNNING,
            value=None,
            datetime_start=datetime.datetime.now(),
            datetime_complete=None,
            params=optuna_params(point),
            distributions=self.distributions(point),
            user_attrs={
                "seed": point.params.get("seed"),
                "grid_key": point.grid_key,
                "attempt": pending.attempt,
                "baseline": point.baseline,
                "kind": point.kind,
                "whole_gpu": pending.whole_gpu,
            },
            system_attrs={},
            intermediate_values={},
            trial_id=-1,
        )
        trial_id = self.storage.create_new_trial(self.study_id, template_trial=template)
        return self.storage.get_trial_number_from_id(trial_id)

    def report(self, number: int, history: list[dict], after: int = 0) -> int:
        """Store the objective of each epoch of `history` after epoch `after` as the trial's intermediate values
        (optuna-dashboard draws them live); returns the last epoch reported."""
        metric = self.spec.objective[0]
        trial_id = self._id(number)
        best = -math.inf if self.spec.objective[1] == "maximize" else math.inf
        for row in history:
            value = row.get(metric if metric != "val_accuracy_best" else "val_accuracy")
            if metric == "val_accuracy_best" and value is not None:
                best = value = max(best, value)
            if row["epoch"] > after and isinstance(value, (int, float)) and math.isfinite(value):
                self.storage.set_trial_intermediate_value(trial_id, row["epoch"], float(value))
        return max([after, *(r["epoch"] for r in history)])

    def finish(self, number: int, metrics: dict[str, Any], history: list[dict] | None = None) -> str | None:
        """Store the per-epoch values and `metrics` as user attrs, then tell COMPLETE with the objective; FAIL if
        the objective is missing or not finite (Optuna would raise and leave the trial RUNNING). Returns None, or
        the failure reason."""
        metric = self.spec.objective[0]
        value = metrics.get(metric)
        if history:
            self.report(number, history)
        trial_id = self._id(number)
        for key, item in metrics.items():
            if isinstance(item, float) and not math.isfinite(item):
                item = None  # JSON cannot hold nan/inf
            self.storage.set_trial_user_attr(trial_id, key, item)
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            reason = f"objective {metric} is {value!r}, not a finite number"
            self.fail(number, reason, "error")
            return reason
        self.study.tell(number, float(value))
        return None

    def prune(self, number: int, rung: int, reason: str, history: list[dict]) -> None:
        """Stop a trial at a halving rung: its values so far, the rung and the reason, then tell PRUNED."""
        self.report(number, history)
        trial_id = self._id(number)
        self.storage.set_trial_user_attr(trial_id, "pruned_at", rung)
        self.storage.set_trial_user_attr(trial_id, "prune_reason", reason)
        self.study.tell(number, state=TrialState.PRUNED)

    def fail(self, number: int, reason: str, kind: str = "error") -> None:
        """Record the one-line `reason` and tell FAIL. A `kind` in NOT_COUNTED does not use an attempt."""
        trial_id = self._id(number)
        self.storage.set_trial_user_attr(trial_id, "fail_reason", one_line(reason))
        self.storage.set_trial_user_attr(trial_id, "fail_kind", kind)
        self.study.tell(number, state=TrialState.FAIL)

    def _id(self, number: int) -> int:
        return self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)

    # -- distributions -------------------------------------------------------------------------------------
    def distributions(self, point: Point) -> dict[str, BaseDistribution]:
        """The Optuna distribution of each of a point's params (`optuna_params`) in this study."""
        return {name: self._distribution(name) for name in optuna_params(point)}

    def _recorded_distributions(self) -> dict[str, BaseDistribution]:
        recorded: dict[str, BaseDistribution] = {}
        for trial in self.trials():
            for name, dist in trial.distributions.items():
                recorded.setdefault(name, dist)
        return recorded

    def _distribution(self, axis: str) -> BaseDistribution:
        recorded = self._distributions.get(axis)
        values = self._values[axis]
        if isinstance(recorded, CategoricalDistribution):
            return recorded
        kind = _axis_kind(axis)
        if kind is float:
            low, high = (0.0, 1.0) if axis in UNIT_INTERVAL else (min(values), max(values))
            return FloatDistribution(min(low, min(values)), max(high, max(values)))
        if kind is int:
            return IntDistribution(min(0, min(values)), max(values))
        return CategoricalDistribution(CLOSED_CHOICES.get(axis) or sorted(set(values), key=str))

    def _check_categories(self) -> None:
        for axis, values in self._values.items():
            recorded = self._distributions.get(axis)
            if isinstance(recorded, CategoricalDistribution):
                new = sorted({v for v in values if v not in recorded.choices}, key=str)
                if new:
                    raise StudyError(
                        f"study {self.spec.name!r}: axis {axis} gains {new}, but Optuna fixed its choices "
                        f"{list(recorded.choices)} at the study's first trial; run the new values as a new study "
                        f"(--study NEW_NAME)"
                    )


def _axis_kind(axis: str) -> type | None:
    if axis == "seed":
        return int
    hint = typing.get_type_hints(TrialConfig).get(axis)
    return hint if hint in (int, float) else None


def check_extension(old: GridSpec, new: GridSpec) -> None:
    """Refuse a space that changes `fixed:`/datasets/objective or drops points the study already has, naming each
    field that differs (old → new). `search run` and its `--dry-run` refuse alike."""
    advice = "run it as a new study (--study NEW_NAME)"
    if old.digest() != new.digest():
        sections = [k for k in ("fixed", "datasets", "objective") if old.data[k] != new.data[k]]
        changed = [line for k in sections for line in _differences(old.data[k], new.data[k], k)]
        shown = "; ".join(changed[:5]) + (f"; and {len(changed) - 5} more" if len(changed) > 5 else "")
        raise StudyError(f"study {new.name!r} was created with different {', '.join(sections)} ({shown}): {advice}")
    new_keys = {p.grid_key for p in new.points}
    removed = [p for p in old.points if p.grid_key not in new_keys]
    if removed:
        raise StudyError(
            f"study {new.name!r}: this space removes {len(removed)} of its points "
            f"(e.g. {removed[0].params}); keep the old values or {advice}"
        )


def _differences(old: Any, new: Any, where: str) -> list[str]:
    """`where.key: old → new` for every leaf that differs between two nested mappings."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [
            line
            for k in sorted(set(old) | set(new), key=str)
            for line in _differences(old.get(k), new.get(k), f"{where}.{k}")
        ]
    return [] if old == new else [f"{where}: {old!r} → {new!r}"]


def one_line(text: str, limit: int = 500) -> str:
    """The first non-empty line of `text`, shortened to `limit` characters."""
    line = next((ln.strip() for ln in str(text).splitlines() if ln.strip()), "unknown error")
    return line if len(line) <= limit else line[: limit - 1] + "…"


def spec_of(study: optuna.Study, validate: bool = False, max_points: int = DEFAULT_MAX_POINTS) -> GridSpec:
    """The space stored on a study; `validate` checks it again as `search resume` must (dataset roots exist…)."""
    data = study.user_attrs.get("space")
    if data is None:
        raise StudyError(f"study {study.study_name!r} holds no space: it was not made by `search run`")
    if validate:
        return parse_space(dict(data), Path(f"<study {study.study_name}>"), study.study_name, max_points=max_points)
    return GridSpec(study.study_name, data)
