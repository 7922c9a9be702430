"""Read-only views of studies: `status`, `studies`, `export` and the `--dry-run` plan. Nothing here writes.

Readers open SQLite read-only (`open_storage(create=False)`), so a supervisor's read-only copy of a study can be read.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.planning.plan import build_plan
from search.planning.price import price
from search.planning.progress import best_of, chance_warnings, eta_seconds, format_seconds, observed_concurrency
from search.records import record
from search.records.storage import StudyError, open_storage, wait_for_creator
from search.records.study import check_extension, spec_of
from search.records.tally import foreign_note, tally
from search.records.trials import read_trials
from search.space.design import block_progress
from search.space.grid import GridSpec
from search.space.spacecheck import root_problems
from trainer.prefix import PointKind


def load_study(name: str, storage_url: str, writable: bool = False) -> optuna.Study:
    """An existing study made by `search run`, read-only (unless `writable`): a missing DB or study is a
    `StudyError`, never created. A study that a starting driver is still creating is waited for."""
    storage = open_storage(storage_url, create=False, writable=True) if writable else _reader(storage_url)
    study = _existing(name, storage)
    if study is None or record.stored_space(study) is None:  # a driver creates the study, then stores its space
        wait_for_creator(storage_url)
        study = _existing(name, storage)
    if study is None:
        names = optuna.get_all_study_names(storage)
        raise StudyError(
            f"no study {name!r} in {storage_url} (studies there: {', '.join(names) or 'none'}; "
            "another storage? pass --storage URL)"
        )
    return study


def load_trials(name: str, storage_url: str) -> list[FrozenTrial]:
    """Every trial of an existing study, read in bulk (`search.records.trials.read_trials`)."""
    storage = _reader(storage_url)
    if _existing(name, storage) is None:
        wait_for_creator(storage_url)
    try:
        return read_trials(storage, name)
    except KeyError:
        raise StudyError(f"no study {name!r} in {storage_url} (another storage? pass --storage URL)") from None


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


def study_status(study: optuna.Study, trials: list[FrozenTrial]) -> dict[str, Any]:
    """Grid size, complete / pruned / running / failed (given up) / waiting (attempts left) / remaining, best value
    and ETA of `study`, whose trials are `trials`."""
    spec = spec_of(study)
    t = tally(spec, trials)
    left_out = set(t.foreign)
    trials = [trial for trial in trials if trial.number not in left_out]
    metric, direction = spec.objective
    durations = [
        (tr.datetime_complete - tr.datetime_start).total_seconds()
        for tr in trials
        if tr.state == TrialState.COMPLETE and tr.datetime_start and tr.datetime_complete
    ]
    waiting = len(t.pending) - len(t.running & {p.point.grid_key for p in t.pending})
    best_trial = best_of([tr for tr in trials if tr.state == TrialState.COMPLETE], spec.objective)
    best = (
        None
        if best_trial is None
        else {
            "value": best_trial.value,
            "number": best_trial.number,
            "params": best_trial.params,
            "kind": record.kind_of(best_trial),
        }
    )
    parallel = observed_concurrency(trials) or (record.slots(study) or max(len(t.running), 1))
    pending = [p.point for p in t.pending]
    plan = build_plan(pending, spec.fixed, record.shared(study) is not False)
    # The ETA is the dry-run's price of what is left (epochs × this study's own seconds per epoch) over the slots;
    # before any trial finished, or for data that cannot be counted, the mean trial time so far.
    resources = record.run_resources(study) or spec.resources  # the run's own flags, once it ran
    priced = price(spec, pending, plan, trials, None, resources)
    work = priced["hours_shared"] * 3600 / (resources["gpus_per_trial"] or 1.0)
    measured = all("measured" in g["rate"].evidence for g in priced["groups"].values())
    eta = work / parallel if pending and not priced["unknown"] else None
    stems = None
    if record.shared(study) and (artifacts := record.recorded_artifacts(study)):
        from search.records.store import ArtifactStore

        store = ArtifactStore(artifacts)
        done = sum(store.folder(stem.folder).read_result() is not None for stem in plan.stems.values())
        stems = {"to_run": len(plan.stems) - done, "done": done}
    return {
        "study": study.study_name,
        "objective": {"metric": metric, "direction": direction},
        "grid_size": len(spec.points),
        "complete": len(t.done),
        "pruned": len(t.pruned),
        "running": len(t.running),
        "failed": len(t.given_up),
        "waiting": waiting,
        "remaining": len(spec.points) - len(t.done) - len(t.pruned),
        "trials": len(trials),
        "best": best,
        "mean_trial_seconds": sum(durations) / len(durations) if durations else None,
        "eta_seconds": eta if eta is not None else eta_seconds(durations, waiting + len(t.running), parallel),
        "eta_basis": _eta_basis(eta is not None, measured, parallel),
        "artifacts": record.recorded_artifacts(study),
        "stems": stems,
        "warnings": chance_warnings(spec, trials),
        "foreign": t.foreign,
        "design": block_progress(spec.design, spec.points, set(t.done))
        if spec.design and spec.design.get("blocks")
        else None,
    }


def _eta_basis(priced: bool, measured: bool, parallel: float) -> str:
    if not priced:
        return "mean trial time"
    rate = "this study's seconds per epoch" if measured else "a rate not yet measured here (no trial finished)"
    return f"epochs left × {rate}, {parallel:.1f} trials at once"


def dry_run_plan(
    spec: GridSpec,
    storage_url: str,
    out_dir: Path,
    artifacts: str,
    share: bool,
    resources: dict[str, float] | None = None,
) -> dict[str, Any]:
    """What `search run` would do, from the study if it exists, priced with the run's `resources` (default: the
    space's); creates nothing."""
    trials = []
    with contextlib.suppress(StudyError):
        trials = load_trials(spec.name, storage_url)
    start_up: float | None = None
    if trials:  # an existing study: refused here exactly as `search run` would refuse it
        study = load_study(spec.name, storage_url)
        if (stored := record.stored_space(study)) is not None:
            check_extension(GridSpec.from_data(spec.name, stored), spec)
        start_up = record.start_seconds(study)
    exploration = _exploration(spec, storage_url)
    t = tally(spec, trials)
    pending = [p.point for p in t.pending]
    plan = build_plan(pending, spec.fixed, share)
    halving_epochs = halving_bound(spec, pending, plan) if spec.halving else None
    return {
        "study": spec.name,
        "grid_size": len(spec.points),
        "complete": len(t.done),
        "pruned": len(t.pruned),
        "to_run": len(pending),
        "given_up": len(t.given_up),
        "storage": storage_url,
        "out_dir": str(out_dir),
        "artifacts": artifacts,
        "stems": len(plan.stems),
        "epochs_naive": plan.naive_epochs,
        "epochs_shared": plan.shared_epochs,
        "epochs_halving": halving_epochs,
        "price": price(spec, pending, plan, trials, halving_epochs, resources, exploration and exploration[:3]),
        "start_up": _start_up(start_up if start_up is not None else exploration and exploration[3]),
        "first_points": [p.params for p in pending[:5]],
        "datasets": dataset_summaries(spec),
        "problems": root_problems(spec.to_data()),
    }


def _exploration(spec: GridSpec, storage_url: str) -> tuple[str, list, GridSpec, float | None] | None:
    """A confirmation's exploration (its name, trials, space and measured start-up), from the confirmation's
    storage or its own default one; None for another study, or when it cannot be read."""
    from search.records.paths import default_storage
    from search.records.study import spec_of

    name = spec.confirms
    if not isinstance(name, str):
        return None
    for url in (storage_url, default_storage(name)):
        with contextlib.suppress(StudyError):
            study = load_study(name, url)
            return name, load_trials(name, url), spec_of(study), record.start_seconds(study)
    return None


DEFAULT_START_S = 10.0  # a run's own start (driver, study, caches) and its worker's first imports, on 2 CPU cores


def _start_up(measured: object) -> tuple[float, str]:
    """What a run costs besides its jobs, and the evidence: measured by the study's last run, else a default."""
    if isinstance(measured, int | float) and math.isfinite(measured) and measured >= 0:
        return float(measured), f"{measured:.0f} s to start (measured)"
    return DEFAULT_START_S, f"{DEFAULT_START_S:.0f} s to start (a default)"


def halving_bound(spec: GridSpec, pending: list, plan) -> int:
    """Epochs to compute with successive halving, at most: stems as planned; baselines and controls to their end;
    in each group, at each rung, the kept fraction of points (rounded up) and, of those, the ones with the most work
    left. (A tie at a cutoff keeps more points than that.)"""
    from search.planning.halving import Halving

    halving = Halving.of(spec.halving, spec.objective)
    if halving is None:
        raise ValueError("halving_bound needs a space with halving:")
    work = sum(s.epochs - (plan.stems[s.parent].epochs if s.parent else 0) for s in plan.stems.values())
    groups: dict[tuple, list[tuple[int, int]]] = {}
    for p in pending:
        span = (plan.start_epoch(p.grid_key), p.schedule.epochs)
        if p.kind == PointKind.PROXY:
            groups.setdefault(halving.group(p), []).append(span)
        else:
            work += span[1] - span[0]
    for spans in groups.values():
        marks = [0, *halving.rungs, max(total for _, total in spans)]
        alive = len(spans)
        for i, (lo, hi) in enumerate(itertools.pairwise(marks)):
            if i:
                alive = math.ceil(halving.keep * alive)
            lengths = sorted((max(0, min(hi, total) - max(lo, start)) for start, total in spans), reverse=True)
            work += sum(lengths[:alive])
    return work


def dataset_summaries(spec: GridSpec) -> list[str]:
    """One line per dataset: its classes, images per class and skipped files (for image folders), so that a root
    pointed one level too high (two "classes": the dataset and something else) is seen before anything runs."""
    from trainer.data.imagefolder import summarize_folder
    from trainer.errors import FolderError

    lines = []
    for name, ds in spec.datasets.items():
        if ds.kind != "imagefolder":
            root = Path(ds.root) if ds.root else None
            if ds.kind == "digits":
                where = "bundled with scikit-learn: present"
            elif root is not None and root.is_dir() and any(root.iterdir()):
                where = f"in {root}: present"
            elif ds.download:
                where = f"in {root}: not there yet (download: true fetches it in the first trial)"
            else:
                where = f"in {root}: missing"
            lines.append(f"{name}: {ds.kind} {where}")
            continue
        try:
            lines.append(
                f"{name}: {summarize_folder(Path(ds.root or '.')).describe()} in {ds.root} (an image that cannot be "
                "read is skipped too when trials read it, and counted with these: `skipped_files`)"
            )
        except FolderError as exc:
            lines.append(f"{name}: {exc}")
    return lines


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    """Rows as CSV (columns in first-seen order), written atomically."""
    import pandas as pd

    from trainer.files import atomic_write_bytes

    atomic_write_bytes(path, pd.DataFrame(rows).to_csv(index=False).encode())


def format_status(info: dict[str, Any]) -> str:
    """A few human lines for `search status`."""
    best = info["best"]
    best_text = "–" if best is None else f"{best['value']:.4f} (trial {best['number']}{_kind_of(best)})"
    eta = info["eta_seconds"]
    lines = [
        f"{info['study']}: {info['grid_size']} points · {info['complete']} complete · {info['pruned']} stopped "
        f"by halving · {info['running']} running · {info['failed']} failed · {info['waiting']} waiting · "
        f"{info['remaining']} remaining",
        f"  best {info['objective']['metric']}: {best_text} · ETA "
        f"{format_seconds(eta) if eta is not None and math.isfinite(eta) else '?'} ({info['eta_basis']})",
    ]
    if info.get("stems"):
        lines.append(
            f"  shared stems of the points left: {info['stems']['done']} done, {info['stems']['to_run']} to run"
        )
    if info.get("design"):
        lines.append(f"  {info['design']}")
    lines += [f"  {warning}" for warning in info.get("warnings") or []]
    if info.get("foreign"):
        lines.append(f"  {foreign_note(info['foreign'])}")
    return "\n".join(lines)


def _kind_of(best: dict[str, Any]) -> str:
    """ ", a baseline" / ", a control" / ", a proxy": what the best trial is (a baseline best is news)."""
    kind = best.get("kind")
    return f", a {kind}" if isinstance(kind, str) else ""
