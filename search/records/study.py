"""The Optuna study in SQLite and its exactly-once bookkeeping. Only the `search run` driver writes.

A point is done when it has a COMPLETE trial, or a PRUNED one (successive halving stopped it). Trials are created
directly as RUNNING with their params, grid_key and attempt in one transaction (no enqueue/ask, so no WAITING or
zombie trial can exist); their per-epoch objective is reported as intermediate values as it comes; they are finished
with `tell` after their metrics are stored as user attrs. Each parameter keeps one distribution for the life of the
study: numbers use Float/IntDistribution (whose range may grow), categories the choices of the study's first trial.
Trial folders live in the artifact store (`search.records.store`), named `trials/<number>-<grid_key[:8]>`.
"""

from __future__ import annotations

import datetime
import math
import typing
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from search.records import record
from search.records.paths import trial_folder
from search.records.storage import StudyError, creating, one_line, open_storage
from search.records.store import ArtifactStore
from search.records.tally import PendingPoint, Tally, tally
from search.records.trials import read_trials
from search.space.grid import GridSpec, Point
from search.space.parse import DEFAULT_MAX_POINTS, parse_space
from trainer.config import (
    AUGMENTATIONS,
    CONTROL_CHOICES,
    PIXEL_REPLACEMENTS,
    PROXY_METHODS,
    UNCHANGED_PROXIES,
    TrialConfig,
)
from trainer.failures import FailureKind

optuna.logging.set_verbosity(optuna.logging.WARNING)


def optuna_params(point: Point) -> dict[str, Any]:
    """A point's Optuna params: its settings without the seed (a repeat, a user attr:
    `search.records.record.seed_of`)."""
    return {k: v for k, v in point.params.items() if k != "seed"}


CLOSED_CHOICES = {
    "cam_method": PROXY_METHODS,
    "pixel_replacement": PIXEL_REPLACEMENTS,
    "augmentation": AUGMENTATIONS,
    "cam_target": ("true", "predicted"),
    "unchanged_proxies": UNCHANGED_PROXIES,
    "control": CONTROL_CHOICES,
}


UNIT_INTERVAL = ("threshold", "multiply_weight", "wrong_subset", "label_smoothing")


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
            direction=optuna.study.StudyDirection[spec.objective.direction.upper()],
        )
        stored = record.stored_space(study)
        if stored is not None:
            check_extension(GridSpec.from_data(spec.name, stored), spec)
        check_seeds_unspent(spec.seeds, record.taken_seeds(study))
        if study.metric_names != [spec.objective.metric]:  # optuna-dashboard names the objective, not "Objective 0"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names([spec.objective.metric])
        handle = cls(study, storage, spec, store)
        handle._check_categories()
        if check is not None:
            check(study)
        record.record_space(study, spec.to_data(), spec.digest(), str(out_dir.resolve()), store.uri)
        return handle

    # -- bookkeeping ---------------------------------------------------------------------------------------
    def trials(self, states: tuple[TrialState, ...] | None = None) -> list[FrozenTrial]:
        """The study's trials (only `states` if given), read in bulk."""
        return read_trials(self.storage, self.spec.name, states)

    def reconcile(
        self,
        reason: str = "orphaned: the driver stopped while this trial ran",
        kind: FailureKind = FailureKind.ORPHANED,
    ) -> tuple[int, int]:
        """Finish every RUNNING trial (left by a dead driver, or by this one when it is stopped): COMPLETE when its
        folder holds its own `result.json` (this point's config digest, this trial's number and grid_key), else
        FAIL with `reason` and `kind` (orphaned or interrupted: no attempt used). Returns (completed, failed)."""
        completed = failed = 0
        for trial in self.trials((TrialState.RUNNING,)):
            key = record.grid_key_of(trial) or ""
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
        if result.get("tag") != record.result_tag(number, key):
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
            user_attrs=record.new_trial_attrs(
                point.params.get("seed"), point.grid_key, pending.attempt, point.kind, pending.whole_gpu
            ),
            system_attrs={},
            intermediate_values={},
            trial_id=-1,
        )
        trial_id = self.storage.create_new_trial(self.study_id, template_trial=template)
        return self.storage.get_trial_number_from_id(trial_id)

    def report(self, number: int, history: list[dict], after: int = 0) -> int:
        """Store the objective of each epoch of `history` after epoch `after` as the trial's intermediate values
        (optuna-dashboard draws them live); returns the last epoch reported."""
        trial_id = self._id(number)
        for epoch, value in self.spec.objective.by_epoch(history):
            if epoch > after and isinstance(value, (int, float)) and math.isfinite(value):
                self.storage.set_trial_intermediate_value(trial_id, epoch, float(value))
        return max([after, *(r["epoch"] for r in history)])

    def finish(self, number: int, metrics: dict[str, Any], history: list[dict] | None = None) -> str | None:
        """Store the per-epoch values and `metrics` as user attrs, then tell COMPLETE with the objective; FAIL if
        the objective is missing or not finite (Optuna would raise and leave the trial RUNNING). Returns None, or
        the failure reason."""
        metric = self.spec.objective.metric
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
            self.fail(number, reason, FailureKind.ERROR)
            return reason
        self.study.tell(number, float(value))
        return None

    def prune(self, number: int, rung: int, reason: str, history: list[dict]) -> None:
        """Stop a trial at a halving rung: its values so far, the rung and the reason, then tell PRUNED."""
        self.report(number, history)
        trial_id = self._id(number)
        for key, item in record.pruned_attrs(rung, reason).items():
            self.storage.set_trial_user_attr(trial_id, key, item)
        self.study.tell(number, state=TrialState.PRUNED)

    def fail(self, number: int, reason: str, kind: FailureKind = FailureKind.ERROR) -> None:
        """Record the one-line `reason` and the `kind` (whether it used an attempt: `FailureKind.uses_attempt`),
        and tell FAIL."""
        trial_id = self._id(number)
        for key, item in record.failed_attrs(one_line(reason), kind).items():
            self.storage.set_trial_user_attr(trial_id, key, item)
        # Where Optuna's own tools (its CLI, optuna-dashboard) look for why a trial failed, kind first: an
        # interrupted or orphaned try is FAIL there, and this says it was stopped, not broken.
        line = one_line(reason)
        self.storage.set_trial_system_attr(
            trial_id, "fail_reason", line if line.startswith(kind.value) else f"{kind.value}: {line}"
        )
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
        was, now = old.lasting(), new.lasting()
        sections = [k for k in was if was[k] != now[k]]
        changed = [line for k in sections for line in _differences(was[k], now[k], k)]
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


def check_seeds_unspent(own: range, taken: list[tuple[str, range]]) -> None:
    """An exploration never runs a seed a confirmation took (its test images judged the confirmation's claims):
    raising `repeats` (its `own` seeds) into them is refused (`StudyError`), saying which."""
    for name, seeds in taken:
        if overlap := sorted(set(own) & set(seeds)):
            raise StudyError(
                f"repeats: {len(own)} would run seeds {overlap[0]}–{overlap[-1]}, which the confirmation "
                f"{name} took (seeds {seeds.start}–{seeds.stop - 1}); a confirmation's seeds are never explored: "
                f"keep repeats at {min(seeds.start, own.stop) - own.start}, or explore in a new study (--study NAME)"
            )


def spec_of(study: optuna.Study, validate: bool = False, max_points: int = DEFAULT_MAX_POINTS) -> GridSpec:
    """The space stored on a study; `validate` checks it again as `search resume` must (dataset roots exist…)."""
    data = record.stored_space(study)
    if data is None:
        raise StudyError(f"study {study.study_name!r} holds no space: it was not made by `search run`")
    if validate:
        return parse_space(dict(data), Path(f"<study {study.study_name}>"), study.study_name, max_points=max_points)
    return GridSpec.from_data(study.study_name, data)
