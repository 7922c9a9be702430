"""Read-only views of studies: `status`, `studies`, `export` and the `--dry-run` plan. Nothing here writes."""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.space import GridSpec
from search.study import StudyError, open_storage, spec_of, tally, wait_for_creator
from search.trials import read_trials


def load_study(name: str, storage_url: str) -> optuna.Study:
    """An existing study made by `search run`, read-only in spirit: a missing DB or study is a `StudyError`, never
    created. A study that a starting driver is still creating is waited for."""
    storage = _reader(storage_url)
    study = _existing(name, storage)
    if study is None or "space" not in study.user_attrs:  # a driver creates the study, then stores its space
        wait_for_creator(storage_url)
        study = _existing(name, storage)
    if study is None:
        names = optuna.get_all_study_names(storage)
        raise StudyError(f"no study {name!r} in {storage_url} (studies there: {', '.join(names) or 'none'})")
    return study


def load_trials(name: str, storage_url: str) -> list[FrozenTrial]:
    """Every trial of an existing study, read in bulk (`search.trials.read_trials`)."""
    storage = _reader(storage_url)
    if _existing(name, storage) is None:
        wait_for_creator(storage_url)
    try:
        return read_trials(storage, name)
    except KeyError:
        raise StudyError(f"no study {name!r} in {storage_url}") from None


def _existing(name: str, storage: optuna.storages.RDBStorage) -> optuna.Study | None:
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return None


@functools.lru_cache(maxsize=8)
def _reader(storage_url: str) -> optuna.storages.RDBStorage:
    """One reading storage per URL and process: opening one checks the schema version, a fifth of a second."""
    return open_storage(storage_url, create=False)


def study_names(storage_url: str) -> list[str]:
    """The studies in a storage."""
    return optuna.get_all_study_names(_reader(storage_url))


def status(study: optuna.Study, trials: list[FrozenTrial]) -> dict[str, Any]:
    """Grid size, complete / running / failed (given up) / waiting (attempts left) / remaining, best value and
    ETA of `study`, whose trials are `trials`."""
    spec = spec_of(study)
    out_dir = Path(study.user_attrs.get("out_dir", "."))
    t = tally(spec, trials, out_dir)
    durations = [(tr.datetime_complete - tr.datetime_start).total_seconds() for tr in trials
                 if tr.state == TrialState.COMPLETE and tr.datetime_start and tr.datetime_complete]
    waiting = len(t.pending) - len(t.running & {p.point.grid_key for p in t.pending})
    mean = sum(durations) / len(durations) if durations else None
    best = None
    complete = [tr for tr in trials if tr.state == TrialState.COMPLETE]
    if complete:
        pick = max if spec.objective[1] == "maximize" else min
        best_trial = pick(complete, key=lambda tr: tr.value)
        best = {"value": best_trial.value, "number": best_trial.number, "params": best_trial.params}
    return {
        "study": study.study_name,
        "objective": {"metric": spec.objective[0], "direction": spec.objective[1]},
        "grid_size": len(spec.points),
        "complete": len(t.done),
        "running": len(t.running),
        "failed": len(t.given_up),
        "waiting": waiting,
        "remaining": len(spec.points) - len(t.done),
        "trials": len(trials),
        "best": best,
        "mean_trial_seconds": mean,
        "eta_seconds": None if mean is None else mean * (waiting + len(t.running)) / max(len(t.running), 1),
    }


def plan(spec: GridSpec, storage_url: str, out_dir: Path) -> dict[str, Any]:
    """What `search run` would do, from the study if it exists; creates nothing."""
    trials = []
    try:
        trials = load_trials(spec.name, storage_url)
    except StudyError:
        pass
    t = tally(spec, trials, out_dir)
    return {"study": spec.name, "grid_size": len(spec.points), "complete": len(t.done), "to_run": len(t.pending),
            "given_up": len(t.given_up), "storage": storage_url, "out_dir": str(out_dir),
            "first_points": [p.point.params for p in t.pending[:5]]}


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    """Rows as CSV (columns in first-seen order), written atomically."""
    import pandas as pd

    from trainer.files import atomic_write_bytes

    frame = pd.DataFrame(rows)
    atomic_write_bytes(path, frame.to_csv(index=False).encode())


def format_status(info: dict[str, Any]) -> str:
    """A few human lines for `search status`."""
    from search.progress import format_seconds

    best = info["best"]
    best_text = "–" if best is None else f"{best['value']:.4f} (trial {best['number']})"
    eta = info["eta_seconds"]
    return (f"{info['study']}: {info['grid_size']} points · {info['complete']} complete · {info['running']} running"
            f" · {info['failed']} failed · {info['waiting']} waiting · {info['remaining']} remaining\n"
            f"  best {info['objective']['metric']}: {best_text} · ETA "
            f"{format_seconds(eta) if eta is not None and math.isfinite(eta) else '?'}")
