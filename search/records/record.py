"""The study's record: the only reader and writer of the attributes a study and its trials carry in Optuna's storage.

A study records its space (`space`, `spec_hash`), where its files went (`out_dir`, `artifacts`), the data it bound
(`data`, `data_changes`), the confirmations made from it (`confirmations`) and how its last run ran (`share`,
`slots`, `start_seconds`). A trial records which point it is a try of (`grid_key`, `seed`, `kind`, `baseline`,
`attempt`, `whole_gpu`), how it ended when it did not complete (`fail_reason`, `fail_kind`, `pruned_at`,
`prune_reason`), and its metrics (`trainer.metrics.METRICS`). Every key is named once, here; readers get typed
values and a default for a study or a trial made before the key existed.
"""

from __future__ import annotations

import enum
from typing import Any, Protocol

from optuna.trial import FrozenTrial

from search.records.paths import run_dir
from trainer.errors import ProxySearchError
from trainer.failures import FailureKind
from trainer.prefix import PointKind


class StudyAttr(enum.StrEnum):
    """The keys of a study's user attributes."""

    SPACE = "space"  # the validated space as data (`GridSpec.to_data`)
    SPEC_HASH = "spec_hash"
    OUT_DIR = "out_dir"
    ARTIFACTS = "artifacts"  # the artifact store's URI
    DATA = "data"  # what each dataset was bound to (`search.planning.databind`)
    DATA_CHANGES = "data_changes"  # changes accepted with --accept-data-change
    CONFIRMATIONS = "confirmations"  # one entry per confirmation made from this exploration
    SHARE = "share"  # whether the last run shared prefixes
    SLOTS = "slots"  # the jobs the last run could hold at once
    RESOURCES = "resources"  # the last run's resources per trial (its flags, else the space's)
    START_SECONDS = "start_seconds"  # the last run's start-up


class TrialAttr(enum.StrEnum):
    """The keys of a trial's user attributes that are not metrics."""

    SEED = "seed"
    GRID_KEY = "grid_key"
    ATTEMPT = "attempt"
    BASELINE = "baseline"
    KIND = "kind"
    WHOLE_GPU = "whole_gpu"  # retried on a whole GPU after running out of memory on a share
    FAIL_REASON = "fail_reason"
    FAIL_KIND = "fail_kind"
    PRUNED_AT = "pruned_at"
    PRUNE_REASON = "prune_reason"


class Attributed(Protocol):
    """A study as Optuna gives it (`Study`, `FrozenStudy`): its name and user attributes."""

    @property
    def study_name(self) -> str: ...

    @property
    def user_attrs(self) -> dict[str, Any]: ...


class _Writable(Protocol):
    def set_user_attr(self, key: str, value: Any) -> None: ...

    @property
    def user_attrs(self) -> dict[str, Any]: ...


# --- a study's record ---------------------------------------------------------------------------------------------


def stored_space(study: Attributed) -> dict | None:
    """The space the study was made with, as data; None before its driver stored it."""
    value = study.user_attrs.get(StudyAttr.SPACE)
    return value if isinstance(value, dict) else None


def stored_design(study: Attributed | None) -> dict | None:
    """The design recorded in the study's space (`design:`), or None."""
    space = stored_space(study) if study is not None else None
    return (space or {}).get("design") or None


def confirms(study: Attributed) -> str | None:
    """The exploration a confirmation study confirms, or None for an exploration."""
    value = (stored_space(study) or {}).get("confirms")
    return value if isinstance(value, str) else None


def artifact_store_of(study: Attributed) -> str:
    """The artifact store a study recorded (`artifacts`; `out_dir` for studies made before it was recorded), else
    its run folder."""
    attrs = study.user_attrs
    return str(attrs.get(StudyAttr.ARTIFACTS) or attrs.get(StudyAttr.OUT_DIR) or run_dir(study.study_name))


def recorded_artifacts(study: Attributed) -> str | None:
    """The artifact store's URI as the study recorded it, or None."""
    value = study.user_attrs.get(StudyAttr.ARTIFACTS)
    return str(value) if value else None


def recorded_out_dir(study: Attributed) -> str | None:
    """The run folder the study recorded, or None."""
    value = study.user_attrs.get(StudyAttr.OUT_DIR)
    return str(value) if value else None


def bound_data(study: Attributed) -> dict:
    """What each dataset of the study was bound to (`search.planning.databind`); empty before its first run."""
    return dict(study.user_attrs.get(StudyAttr.DATA) or {})


def data_changes(study: Attributed) -> list:
    """The data changes accepted with --accept-data-change, oldest first."""
    return list(study.user_attrs.get(StudyAttr.DATA_CHANGES) or [])


def confirmations(study: Attributed) -> list[dict]:
    """The confirmations made from an exploration, oldest first (entries that are no mapping left out)."""
    return [e for e in study.user_attrs.get(StudyAttr.CONFIRMATIONS) or [] if isinstance(e, dict)]


def taken_seeds(study: Attributed) -> list[tuple[str, range]]:
    """Every confirmation's seeds, as recorded on the exploration `study` (`confirmations`: one entry each time a
    confirmation chose its seeds, even one that never ran a trial): a seed taken once is spent for good. A record
    that cannot be read is refused (`ProxySearchError`): guessing could spend a seed twice."""
    confirmations = study.user_attrs.get(StudyAttr.CONFIRMATIONS)
    if confirmations is None:
        return []
    taken = []
    for entry in confirmations if isinstance(confirmations, list) else [confirmations]:
        fields = entry if isinstance(entry, dict) else {}
        first, count = fields.get("seeds_from"), fields.get("seeds")
        if type(first) is not int or type(count) is not int or first < 0 or count < 1:
            raise ProxySearchError(
                f"the exploration's record of its confirmations (study attribute `confirmations`) holds {entry!r}, "
                "not {name, seeds_from, seeds}: restore it, or confirm a copy of the exploration"
            )
        taken.append((str(fields.get("name")), range(first, first + count)))
    return taken


def shared(study: Attributed) -> bool | None:
    """Whether the study's last run shared prefixes; None before its first run."""
    value = study.user_attrs.get(StudyAttr.SHARE)
    return None if value is None else bool(value)


def slots(study: Attributed) -> float | None:
    """The jobs the last run could hold at once, or None."""
    value = study.user_attrs.get(StudyAttr.SLOTS)
    return float(value) if value else None


def run_resources(study: Attributed) -> dict[str, float] | None:
    """The resources per trial the last run used (`--gpus-per-trial`, `--cpus-per-trial`, else the space's), or
    None before a run recorded them."""
    value = study.user_attrs.get(StudyAttr.RESOURCES)
    return dict(value) if isinstance(value, dict) else None


def start_seconds(study: Attributed) -> float | None:
    """The last run's start-up in seconds, or None."""
    value = study.user_attrs.get(StudyAttr.START_SECONDS)
    return None if value is None else float(value)


def record_space(study: _Writable, data: dict, digest: str, out_dir: str, artifacts: str) -> None:
    """Store the space a study is made (or extended) with, and where its files go."""
    study.set_user_attr(StudyAttr.SPACE, data)
    study.set_user_attr(StudyAttr.SPEC_HASH, digest)
    study.set_user_attr(StudyAttr.OUT_DIR, out_dir)
    study.set_user_attr(StudyAttr.ARTIFACTS, artifacts)


def record_run(study: _Writable, share: bool, slots: int, resources: dict[str, float]) -> None:
    """Store how this run runs (for `search status`: its stems and its ETA at the run's own resources)."""
    study.set_user_attr(StudyAttr.SHARE, share)
    study.set_user_attr(StudyAttr.SLOTS, slots)
    study.set_user_attr(StudyAttr.RESOURCES, dict(resources))


def record_start_seconds(study: _Writable, seconds: float) -> None:
    """Store this run's start-up (the ETA of the next `search status` counts it)."""
    study.set_user_attr(StudyAttr.START_SECONDS, seconds)


def record_data(study: _Writable, recorded: dict) -> None:
    """Store what each dataset is bound to."""
    study.set_user_attr(StudyAttr.DATA, recorded)


def add_data_changes(study: _Writable, changes: list) -> None:
    """Append accepted data changes to the study's list."""
    study.set_user_attr(StudyAttr.DATA_CHANGES, [*(study.user_attrs.get(StudyAttr.DATA_CHANGES) or []), *changes])


def add_confirmation(study: _Writable, entry: dict) -> None:
    """Append a confirmation made from this exploration."""
    study.set_user_attr(StudyAttr.CONFIRMATIONS, [*(study.user_attrs.get(StudyAttr.CONFIRMATIONS) or []), entry])


# --- a trial's record ---------------------------------------------------------------------------------------------


def grid_key_of(trial: FrozenTrial) -> str | None:
    """The grid point a trial is a try of, or None (a trial added by hand)."""
    value = trial.user_attrs.get(TrialAttr.GRID_KEY)
    return None if value is None else str(value)


def kind_of(trial: FrozenTrial, default: PointKind | None = None) -> PointKind | None:
    """What the trial's point is, as recorded (`default` when it was not); None for a value that is no kind."""
    value = trial.user_attrs.get(TrialAttr.KIND, default)
    return PointKind(value) if value in set(PointKind) else None


def seed_of(trial: FrozenTrial) -> Any:
    """A trial's seed: a user attr (studies made before it moved out of the params keep it as a param)."""
    return trial.params.get(TrialAttr.SEED, trial.user_attrs.get(TrialAttr.SEED))


def fail_kind_of(trial: FrozenTrial) -> FailureKind:
    """Why a failed trial failed (`FailureKind.read`: ERROR when not recorded)."""
    return FailureKind.read(trial.user_attrs.get(TrialAttr.FAIL_KIND))


def recorded_fail_kind(trial: FrozenTrial) -> str | None:
    """The failure kind exactly as recorded (None when it was not)."""
    value = trial.user_attrs.get(TrialAttr.FAIL_KIND)
    return None if value is None else str(value)


def on_whole_gpu(trial: FrozenTrial) -> bool:
    """Whether the try ran on a whole GPU (a retry after running out of memory on a share)."""
    return bool(trial.user_attrs.get(TrialAttr.WHOLE_GPU))


def pruned_at(trial: FrozenTrial) -> int | None:
    """The halving rung a pruned trial stopped at, or None."""
    value = trial.user_attrs.get(TrialAttr.PRUNED_AT)
    return None if value is None else int(value)


def placement(node: str | None, gpu_ids: list[str]) -> dict[str, Any]:
    """Where a trial ran, recorded beside its metrics (`trainer.metrics.METRICS`): its Ray node, its GPUs."""
    return {"ray_node": node, "gpu_ids": gpu_ids}


def metric(trial: FrozenTrial, name: str) -> Any:
    """A metric the trial recorded (`trainer.metrics.METRICS`), or None."""
    return trial.user_attrs.get(name)


def metric_names(trials: list[FrozenTrial]) -> list[str]:
    """The metrics `trials` recorded, sorted: every user attribute that is no `TrialAttr`."""
    return sorted({name for t in trials for name in t.user_attrs} - set(TrialAttr))


def trial_attrs(trial: FrozenTrial) -> dict[str, Any]:
    """A trial's record as a row: every `TrialAttr` but the seed (`seed_of` reads it), None where not recorded."""
    return {key.value: trial.user_attrs.get(key) for key in TrialAttr if key is not TrialAttr.SEED}


def new_trial_attrs(seed: Any, grid_key: str, attempt: int, kind: PointKind, whole_gpu: bool) -> dict[str, Any]:
    """The record a try of a point starts with."""
    return {
        TrialAttr.SEED: seed,
        TrialAttr.GRID_KEY: grid_key,
        TrialAttr.ATTEMPT: attempt,
        TrialAttr.BASELINE: kind == PointKind.BASELINE,
        TrialAttr.KIND: kind,
        TrialAttr.WHOLE_GPU: whole_gpu,
    }


def pruned_attrs(rung: int, reason: str) -> dict[str, Any]:
    """What a trial stopped at a halving rung records."""
    return {TrialAttr.PRUNED_AT: rung, TrialAttr.PRUNE_REASON: reason}


def failed_attrs(reason: str, kind: FailureKind) -> dict[str, Any]:
    """What a failed trial records: its one-line reason and its kind."""
    return {TrialAttr.FAIL_REASON: reason, TrialAttr.FAIL_KIND: kind.value}


def result_tag(number: int | None, grid_key: str | None) -> dict[str, Any]:
    """What a trial's `result.json` carries to say whose it is (checked when a stopped driver's trials are
    reconciled: a result copied in from another trial's folder is not taken)."""
    return {"trial_number": number, "grid_key": grid_key}
