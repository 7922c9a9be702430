"""Planning `search confirm`: which configurations of an exploration run again, on which fresh seeds, bound to which
data — the plan the command line prints and launches.

The selection (`search.planning.confirm`: observed best, or the effects model's predicted best, or both) is made once,
under
the exploration's `seeds` lock, and recorded on the exploration before the first trial (`record_confirmation`): two
confirmations started together take different seeds, and a killed one's seeds stay spent. A confirmation run again
keeps the selection it was first made with.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from search.planning.confirm import ConfirmError, combine, confirmation_space, fresh_seed, paired_spread
from search.planning.confirm import select as select_observed
from search.planning.databind import Origin
from search.planning.progress import chance_warnings
from search.planning.status import load_study, load_trials
from search.records import record
from search.records.storage import DriverLock, StudyError, open_storage
from search.records.study import spec_of
from search.records.tally import foreign_note, of_the_grid, tally
from search.space.grid import GridSpec
from search.space.parse import parse_space

SEEDS_WAIT = 120.0  # seconds a confirmation waits for another one choosing its seeds from the same exploration
SELECTIONS = ("observed", "model", "both")


@dataclass
class Ask:
    """What `search confirm` was asked: the exploration, the confirmation's name, and how to select."""

    study: str
    storage: str
    name: str
    confirm_storage: str
    top: int
    per: str
    seeds: int
    select: str = "observed"
    allow_test_overlap: bool = False


@dataclass
class ConfirmationPlan:
    """The confirmation's space, and what the command says about it: whether it was chosen now (else resumed), the
    selection per group with each group's paired spread from the exploration, and its warnings."""

    spec: GridSpec
    chosen_now: bool
    exploration: GridSpec
    selected: dict[tuple, list[dict]] = field(default_factory=dict)
    spread: dict[tuple, float] = field(default_factory=dict)
    per_axes: tuple[str, ...] = ()
    warnings: list[str] = field(default_factory=list)


def plan_confirmation(ask: Ask, dry_run: bool) -> ConfirmationPlan:
    """The confirmation of `ask.study`, its selection made and recorded on the exploration under its `seeds` lock
    (a dry run only looks). Raises `ConfirmError` (or another `ProxySearchError`) saying why it cannot be made."""
    lock = nullcontext() if dry_run else DriverLock(ask.storage, ask.study, "seeds", wait=SEEDS_WAIT)
    with lock:
        plan = _choose(ask, dry_run)
        if plan.chosen_now and not dry_run:
            record_confirmation(ask.study, ask.storage, plan.spec)
    return plan


def _choose(ask: Ask, dry_run: bool) -> ConfirmationPlan:
    """The space a confirmation was first made with (resumed), else the top configurations of the exploration per
    group of `ask.per` on fresh seeds."""
    exploration = load_study(ask.study, ask.storage)
    spec = spec_of(exploration)
    asked = [a for a in ask.per.split(",") if a]
    unknown = [a for a in asked if a not in (*spec.axes, "dataset", "architecture")]
    if unknown:
        raise ConfirmError(f"--per: {unknown[0]!r} is not an axis of {ask.study} ({', '.join(spec.axes)})")
    per_axes = tuple(a for a in asked if a in spec.axes)  # dataset, architecture: where the study has them
    existing = existing_study(ask.name, ask.confirm_storage)
    if existing is not None and record.confirms(existing) == ask.study:
        # Resumed: the selection stays as first made, whatever the exploration has done since.
        note = f"{ask.name}: resuming the confirmation of {ask.study} (its selection is kept)"
        return ConfirmationPlan(spec_of(existing, validate=not dry_run), False, spec, warnings=[note])
    warnings: list[str] = []
    overlap = _test_part_overlaps(ask, spec, warnings)
    trials, foreign = of_the_grid(spec, load_trials(ask.study, ask.storage))  # one added by hand is never selected
    if foreign:
        warnings.append(f"warning: {foreign_note(foreign)}")
    warnings += _unfinished(ask.study, spec, trials)
    warnings += [f"{w}: the selection below ranks noise" for w in chance_warnings(spec, trials)]
    observed = select_observed(trials, spec, ask.top, per_axes) if ask.select != "model" else {}
    predicted = model_selection(exploration, trials, ask.top) if ask.select != "observed" else {}
    selected = {"observed": observed, "model": predicted}.get(ask.select) or combine(predicted, observed, ask.top)
    seeds_from = fresh_seed(spec.seeds, record.taken_seeds(exploration))
    data = confirmation_space(spec, selected, ask.seeds, ask.name, seeds_from, overlap)
    made = parse_space(data, Path(f"<confirmation of {ask.study}>"), ask.name, check_roots=not dry_run)
    spread = paired_spread(trials, spec, selected)
    return ConfirmationPlan(made, True, spec, selected, spread, per_axes, warnings)


def _test_part_overlaps(ask: Ask, spec: GridSpec, warnings: list[str]) -> bool:
    """A confirmation tests on images no exploration trial selected on: the exploration's test part must be held
    out for every seed (`split: {test_seed: N}`) or the publisher's (`test: official`). With a test part drawn per
    seed, each exploration seed validated on images another seed tests on (measured: 49–56 of 160 test images):
    refused unless `allow_test_overlap`, then kept and said."""
    split = spec.fixed.get("split") or {}
    if split.get("test") == "official" or split.get("test_seed") is not None:
        return False
    message = (
        f"the exploration {ask.study} drew its test part per seed, so the confirmation's test images include images "
        "its trials selected on (validation); run the exploration with split: {test_seed: 0} (or test: official)"
    )
    if not ask.allow_test_overlap:
        raise ConfirmError(message + ", or pass --allow-test-overlap (the report says so)")
    warnings.append(f"warning: {message} (--allow-test-overlap: kept, recorded and said in the report)")
    return True


def _unfinished(study: str, spec: GridSpec, trials: list[FrozenTrial]) -> list[str]:
    """A selection from a partly run exploration ranks only what ran: said, with the numbers."""
    t = tally(spec, trials)
    ended = len(t.done) + len(t.pruned) + len(t.given_up)
    if ended >= len(spec.points):
        return []
    return [
        f"warning: the exploration {study} is unfinished: {ended:,} of {len(spec.points):,} points ended "
        f"({len(t.done):,} complete, {len(t.pruned):,} stopped by halving, {len(t.given_up):,} failed); the "
        f"selection ranks only the complete ones (run `search run` on it again to finish it first)"
    ]


def model_selection(exploration: optuna.Study, trials: list[FrozenTrial], top: int) -> dict[tuple, list[dict]]:
    """The `top` configurations per (dataset, architecture) the exploration's effects model predicts best, run or
    not (`search.planning.adaptive.trials_fit`), in the form `search.planning.confirm.select` gives (`_predicted`: the
    predicted gain,
    pp; `_spread`: the fit's paired-gain spread, what a confirmation of picks run on one seed plans its power
    from)."""
    from search.planning.adaptive import trials_fit

    spec = spec_of(exploration)
    out: dict[tuple, list[dict[str, Any]]] = {}
    for (dataset, arch), family in trials_fit(spec, trials, top=top).items():
        group = tuple((a, v) for a, v in (("dataset", dataset), ("architecture", arch)) if a in spec.axes)
        spread = family.spread_pp / 100  # the fit's paired-gain spread, in the objective's units
        out[group] = [
            {**dict(group), **e["settings"], "_predicted": e["predicted_pp"], "_spread": spread} for e in family.best
        ]
    if not any(out.values()):
        raise ConfirmError(
            "--select model: the exploration has too few paired gains to fit its effects (see its report)"
        )
    return out


def record_confirmation(study: str, storage: str, confirmation: GridSpec) -> None:
    """The exploration keeps every choice of seeds a confirmation made (one entry each, never replaced: a
    confirmation killed and chosen again spent its first seeds too), so the next one takes others."""
    exploration = optuna.load_study(study_name=study, storage=open_storage(storage, create=False, writable=True))
    seeds = confirmation.seeds
    entry = {"name": confirmation.name, "seeds_from": seeds.start, "seeds": len(seeds), "at": time.time()}
    if confirmation.test_overlap:
        entry["test_overlap"] = True
    record.add_confirmation(exploration, entry)


def data_origin(study: str, storage: str) -> Origin:
    """The exploration as the confirmation's data origin: its binding, its store, and a way to record an accepted
    change in it."""
    from search.records.store import ArtifactStore

    exploration = load_study(study, storage)

    def accepted(changes: list[dict]) -> None:
        writable = optuna.load_study(study_name=study, storage=open_storage(storage, create=False, writable=True))
        record.add_data_changes(writable, changes)

    return Origin(study, record.bound_data(exploration), ArtifactStore(record.artifact_store_of(exploration)), accepted)


def existing_study(name: str, storage: str) -> optuna.Study | None:
    """The study `name` in `storage`, or None when the database or the study does not exist yet."""
    try:
        return load_study(name, storage)
    except StudyError:
        return None
