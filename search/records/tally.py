"""Where each point of a space stands in a study's trials: done, stopped by halving, running, attempts used,
pending (and where its last try can resume from), given up. Pure reading: nothing here writes."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from search.records import record
from search.records.paths import trial_folder
from search.records.store import ArtifactStore
from search.space.grid import GridSpec, Point, lasting_objects
from trainer.failures import FailureKind


def shown_state(state: TrialState, fail_kind: object) -> str:
    """A trial's state as people read it: an interrupted or orphaned try is INTERRUPTED, not FAIL."""
    return "INTERRUPTED" if state == TrialState.FAIL and FailureKind.read(fail_kind).stopped else state.name


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
    """Where each point of a space stands in a study; `foreign`: the numbers of trials that are no try of a point
    (`of_the_grid`), left out of everything."""

    done: set[str]
    pruned: set[str]
    running: set[str]
    attempts: Counter
    pending: list[PendingPoint]
    given_up: list[Point]
    foreign: list[int]


def of_the_grid(spec: GridSpec, trials: list[FrozenTrial]) -> tuple[list[FrozenTrial], list[int]]:
    """The trials that are tries of `spec`'s points, and the numbers of the others. A study can be edited with
    Optuna alone (`study.add_trial`, the dashboard, SQL): a trial counts only when its `grid_key` names a point of
    the grid, its params and seed are that point's, its kind is the point's, and, COMPLETE, its objective is a
    finite number. Anything else would count a point done that never ran, or break a table."""
    kept, foreign = [], []
    for trial in trials:
        index = spec.order.get(record.grid_key_of(trial))  # type: ignore[arg-type]
        if index is not None and _is_try_of(trial, spec.points[index]):
            kept.append(trial)
        else:
            foreign.append(trial.number)
    return kept, foreign


def _is_try_of(trial: FrozenTrial, point: Point) -> bool:
    if record.kind_of(trial, point.kind) != point.kind:
        return False
    if trial.state == TrialState.COMPLETE:
        value = trial.values[0] if trial.values else None
        if not (isinstance(value, float | int) and not isinstance(value, bool) and math.isfinite(value)):
            return False
    settings = {**trial.params, "seed": record.seed_of(trial)}
    return settings.keys() == point.params.keys() and all(_same(settings[k], v) for k, v in point.params.items())


def _same(a: Any, b: Any) -> bool:
    """Equal as settings: numbers within rounding (Optuna stores floats), anything else exactly."""
    if isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool) | isinstance(b, bool):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def foreign_note(foreign: list[int]) -> str:
    """What `of_the_grid` left out, in one line."""
    shown = ", ".join(map(str, foreign[:10])) + (", …" if len(foreign) > 10 else "")
    return (
        f"{len(foreign)} trial{'s' if len(foreign) > 1 else ''} not of this grid left out (numbers {shown}: params, "
        "seed, kind or objective that no point of the space has; added outside `search run`?)"
    )


def tally(spec: GridSpec, trials: list[FrozenTrial], store: ArtifactStore | None = None) -> Tally:
    """Done (COMPLETE), pruned, running, attempts used (failures that count), pending (attempts left) and given-up
    points, counting only the trials `of_the_grid`. With a `store`, each pending point resumes from its latest try
    that got as far as a checkpoint."""
    trials, foreign = of_the_grid(spec, trials)
    done: set[str] = set()
    pruned: set[str] = set()
    running: set[str] = set()
    attempts: Counter[str] = Counter()
    last: dict[str, str] = {}
    whole_gpu: set[str] = set()
    for trial in trials:
        key = str(record.grid_key_of(trial))
        if trial.state == TrialState.COMPLETE:
            done.add(key)
        elif trial.state == TrialState.PRUNED:
            pruned.add(key)
        elif trial.state == TrialState.RUNNING:
            running.add(key)
        elif trial.state == TrialState.FAIL:
            kind = record.fail_kind_of(trial)
            attempts[key] += kind.uses_attempt
            if kind.whole_gpu_retry or record.on_whole_gpu(trial):
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
    return Tally(done, pruned, running, attempts, pending, given_up, foreign)
