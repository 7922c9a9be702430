"""`search confirm`: the confirmation stage of an exploration from the command line (its selection, observed or
by the effects model, its seeds, its planned power, its record on the exploration)."""

from __future__ import annotations

import functools
import math
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from cli.app import (
    CACHE_DIR,
    DRY_RUN,
    EXECUTOR,
    MAX_CONCURRENT,
    MAX_TRIALS,
    NO_CACHE,
    NO_SHARE,
    RAY_ADDRESS,
    SCRATCH,
    ExecutorKind,
    app,
)
from cli.errors import fail
from cli.launch import launch
from search import record
from search.databind import Origin
from search.grid import GridSpec
from search.options import RunFlags, resolve, storage_of
from search.paths import run_dir
from search.storage import DriverLock, StudyError

if TYPE_CHECKING:
    import optuna


@app.command(short_help="Confirm the best configurations on fresh seeds.")
def confirm(
    study: str = typer.Option(..., help="the exploration study to confirm"),
    top: int = typer.Option(3, help="configurations per group, best first by the exploration's objective"),
    select: str = typer.Option(
        "observed",
        help="observed: best by the objective's mean; model: best by the effects model (run or not); both: the "
        "model's best TOP-1 and the best observed",
    ),
    per: str = typer.Option("dataset,architecture", help="the axes of a group, comma-separated"),
    seeds: int = typer.Option(10, help="fresh seeds per configuration, disjoint from the exploration's"),
    name: str | None = typer.Option(None, help="the confirmation study (default STUDY-confirm)"),
    storage: str | None = typer.Option(None, help="Optuna storage URL of both studies (default runs/<study>.db)"),
    correction: str = typer.Option("holm", help="the correction the power is planned for: holm, bh or none"),
    executor: ExecutorKind = EXECUTOR,
    ray_address: str | None = RAY_ADDRESS,
    max_concurrent: int | None = MAX_CONCURRENT,
    max_trials: int | None = MAX_TRIALS,
    no_share: bool = NO_SHARE,
    cache_dir: Path | None = CACHE_DIR,
    no_cache: bool = NO_CACHE,
    scratch: str | None = SCRATCH,
    dry_run: bool = DRY_RUN,
    accept_data_change: bool = typer.Option(
        False, "--accept-data-change", help="confirm although the data changed since the exploration (recorded in both)"
    ),
    allow_test_overlap: bool = typer.Option(
        False, "--allow-test-overlap", help="confirm an exploration whose test part was drawn per seed"
    ),
) -> None:
    """Run the top configurations of an exploration again on fresh seeds, each beside its matched baselines and
    controls, at full budget and without halving: the study whose verdicts the thesis reports. It is bound to the
    data the exploration ran on. Run it again to resume (its selection stays as first made)."""
    confirm_name = name or f"{study}-confirm"
    _check_flags(top, seeds, correction, select, per)
    run_dir(study), run_dir(confirm_name)  # both names checked before anything is read
    if confirm_name == study:
        fail(f"--name: {study} is the exploration itself; name its confirmation otherwise (default {study}-confirm)")
    confirm_storage = storage_of(confirm_name, storage)
    exploration_storage = storage_of(study, storage)
    choose = functools.partial(
        _confirmation,
        study,
        exploration_storage,
        confirm_name,
        confirm_storage,
        top,
        per,
        seeds,
        correction,
        dry_run,
        allow_test_overlap=allow_test_overlap,
        select=select,
    )
    confirmation = _choose(study, exploration_storage, dry_run, choose)
    flags = RunFlags(
        storage=confirm_storage,
        executor=executor.value,
        ray_address=ray_address,
        max_concurrent=max_concurrent,
        max_trials=max_trials,
        share=not no_share,
        cache_dir=cache_dir,
        no_cache=no_cache,
        scratch=scratch,
        accept_data_change=accept_data_change,
    )
    existing = _existing_study(confirm_name, confirm_storage)
    origin = None
    if existing is None or not record.bound_data(existing):  # once bound, the confirmation keeps its own
        origin = _origin(study, storage_of(study, storage))
    options = resolve(confirmation, flags, origin=origin)
    launch(confirmation, options, dry_run)


SEEDS_WAIT = 120.0  # seconds a confirmation waits for another one choosing its seeds from the same exploration


def _choose(
    study: str, exploration_storage: str, dry_run: bool, choose: Callable[[], tuple[GridSpec, bool]]
) -> GridSpec:
    """The confirmation's space (`choose`: `_confirmation`), its seeds chosen and recorded on the exploration under
    the exploration's `seeds` lock before the first trial: two confirmations started together take different seeds,
    and a killed one's seeds stay spent. A dry run only looks."""
    seeds_lock = nullcontext() if dry_run else DriverLock(exploration_storage, study, "seeds", wait=SEEDS_WAIT)
    with seeds_lock:
        confirmation, chosen_now = choose()
        if chosen_now and not dry_run:
            _record_confirmation(study, exploration_storage, confirmation)
    return confirmation


def _check_flags(top: int, seeds: int, correction: str, select: str, per: str) -> None:
    """The flags that need no study, each refused in one line."""
    from analysis.stats import CORRECTIONS

    for flag, value, low in (("--top", top, 1), ("--seeds", seeds, 3)):
        if value < low:
            fail(f"{flag}: expected an integer of at least {low}, got {value}")
    if correction not in CORRECTIONS:
        fail(f"--correction: expected one of {', '.join(CORRECTIONS)}, got {correction!r}")
    if select not in ("observed", "model", "both"):
        fail(f"--select: expected observed, model or both, got {select!r}")
    if select != "observed" and set(per.split(",")) != {"dataset", "architecture"}:
        fail(f"--select {select}: the effects model is fitted per dataset × architecture; leave --per as it is")


def _record_confirmation(study: str, storage: str, confirmation: GridSpec) -> None:
    """The exploration keeps every choice of seeds a confirmation made (one entry each, never replaced: a
    confirmation killed and chosen again spent its first seeds too), so the next one takes others."""
    import optuna

    from search.storage import open_storage

    exploration = optuna.load_study(study_name=study, storage=open_storage(storage, create=False, writable=True))
    seeds = confirmation.seeds
    entry = {"name": confirmation.name, "seeds_from": seeds.start, "seeds": len(seeds), "at": time.time()}
    if confirmation.test_overlap:
        entry["test_overlap"] = True
    record.add_confirmation(exploration, entry)


def _origin(study: str, storage: str) -> Origin:
    """The exploration as the confirmation's data origin: its binding, its store, and a way to record an accepted
    change in it."""
    import optuna

    from search.status import load_study
    from search.storage import open_storage
    from search.store import ArtifactStore

    exploration = load_study(study, storage)

    def accepted(changes: list[dict]) -> None:
        writable = optuna.load_study(study_name=study, storage=open_storage(storage, create=False, writable=True))
        record.add_data_changes(writable, changes)

    where = record.artifact_store_of(exploration)
    return Origin(study, record.bound_data(exploration), ArtifactStore(where), accepted)


def _confirmation(
    study: str,
    storage: str,
    confirm_name: str,
    confirm_storage: str,
    top: int,
    per: str,
    seeds: int,
    correction: str,
    dry_run: bool,
    *,
    allow_test_overlap: bool,
    select: str,
) -> tuple[GridSpec, bool]:
    """The confirmation study's space and whether it was chosen now: the one it was first made with (resumed), else
    the top configurations of `study` per group of `per` on fresh seeds, printed with the effect the confirmation
    can detect."""
    from search.confirm import combine, confirmation_space, fresh_seed, paired_spread
    from search.confirm import select as select_observed
    from search.progress import chance_warnings
    from search.space import parse_space
    from search.status import load_study, load_trials
    from search.study import spec_of
    from search.tally import foreign_note, of_the_grid

    exploration = load_study(study, storage)
    spec = spec_of(exploration)
    trials = load_trials(study, storage)
    asked = [a for a in per.split(",") if a]
    unknown = [a for a in asked if a not in (*spec.axes, "dataset", "architecture")]
    if unknown:
        fail(f"--per: {unknown[0]!r} is not an axis of {study} ({', '.join(spec.axes)})")
    per_axes = tuple(a for a in asked if a in spec.axes)  # dataset, architecture: where the study has them
    existing = _existing_study(confirm_name, confirm_storage)
    if existing is not None and record.confirms(existing) == study:
        # Resumed: the selection stays as first made, whatever the exploration has done since.
        print(f"{confirm_name}: resuming the confirmation of {study} (its selection is kept)", file=sys.stderr)
        return spec_of(existing, validate=not dry_run), False
    overlap = _check_test_part(study, spec, allow_test_overlap)
    trials, foreign = of_the_grid(spec, trials)  # a trial added by hand is never selected
    if foreign:
        print(f"warning: {foreign_note(foreign)}", file=sys.stderr)
    _warn_if_unfinished(study, spec, trials)
    for learned_nothing in chance_warnings(spec, trials):  # a ranking of noise: said before it is paid for
        print(f"{learned_nothing}: the selection below ranks noise", file=sys.stderr)
    observed = select_observed(trials, spec, top, per_axes) if select != "model" else {}
    predicted = _model_selection(exploration, trials, top) if select != "observed" else {}
    selected = {"observed": observed, "model": predicted}.get(select) or combine(predicted, observed, top)
    made = record.confirmations(exploration)
    data = confirmation_space(spec, selected, seeds, confirm_name, fresh_seed(spec.seeds, made), overlap)
    confirmation = parse_space(data, Path(f"<confirmation of {study}>"), confirm_name, check_roots=not dry_run)
    _print_selection(spec, selected, paired_spread(trials, spec, selected), per_axes, seeds, correction)
    first = confirmation.seeds.start
    print(f"seeds {first}–{first + seeds - 1}: none used by {study} or by a confirmation made from it before")
    return confirmation, True


def _check_test_part(study: str, spec: GridSpec, allowed: bool) -> bool:
    """A confirmation tests on images no exploration trial selected on: the exploration's test part must be held
    out for every seed (`split: {test_seed: N}`) or the publisher's (`test: official`). With a test part drawn per
    seed, each exploration seed validated on images another seed tests on (measured: 49–56 of 160 test images)."""
    split = spec.fixed.get("split") or {}
    if split.get("test") == "official" or split.get("test_seed") is not None:
        return False
    message = (
        f"the exploration {study} drew its test part per seed, so the confirmation's test images include images "
        "its trials selected on (validation); run the exploration with split: {test_seed: 0} (or test: official)"
    )
    if not allowed:
        fail(message + ", or pass --allow-test-overlap (the report says so)")
    print(f"warning: {message} (--allow-test-overlap: kept, recorded and said in the report)", file=sys.stderr)
    return True


def _warn_if_unfinished(study: str, spec: GridSpec, trials: list) -> None:
    """A selection from a partly run exploration ranks only what ran: say so, with the numbers."""
    from search.tally import tally

    t = tally(spec, trials)
    ended = len(t.done) + len(t.pruned) + len(t.given_up)
    if ended < len(spec.points):
        print(
            f"warning: the exploration {study} is unfinished: {ended:,} of {len(spec.points):,} points ended "
            f"({len(t.done):,} complete, {len(t.pruned):,} stopped by halving, {len(t.given_up):,} failed); the "
            f"selection ranks only the complete ones (run `search run` on it again to finish it first)",
            file=sys.stderr,
        )


def _model_selection(exploration: optuna.Study, trials: list, top: int) -> dict[tuple, list[dict]]:
    """The configurations the exploration's effects model predicts best (`results.effects.model_selection`)."""
    from results.effects import model_selection
    from search.trialtable import load_study_data

    selected = model_selection(load_study_data(exploration, trials), top)
    if not any(selected.values()):
        fail("--select model: the exploration has too few paired gains to fit its effects (see its report)")
    return selected


def _print_selection(
    spec: GridSpec, selected: dict, spread: dict, per_axes: tuple[str, ...], seeds: int, correction: str
) -> None:
    """Each group's chosen configurations, and the smallest effect the confirmation's claims can detect: they are
    one family over the whole study (`results.claims`), so the plan uses the number of configurations selected in
    all, with the range the spread may have, estimated from the exploration's few seeds."""
    from scipy import stats

    from analysis.stats import claim_mde

    family = sum(len(chosen) for chosen in selected.values())
    df = max(len(spec.seeds) - 1, 1)  # the spread of each configuration is read from this many
    factors = [math.sqrt(df / stats.chi2.ppf(q, df)) for q in (0.975, 0.025)]  # its 95 % interval, as multiples
    for group, chosen in selected.items():
        where = ", ".join(f"{a} {v}" for a, v in group) or "the study"
        print(f"{where}: confirm {len(chosen)} configurations (by {spec.objective.metric}, best first):")
        for config in chosen:
            shown = " ".join(f"{k}={v}" for k, v in config.items() if not k.startswith("_") and k not in per_axes)
            value = (
                f"predicted gain {config['_predicted']:+.2f} pp"
                if "_predicted" in config
                else f"observed mean {_shown(config['_mean'], spec.objective.metric)}"
            )
            print(f"  {value}  {shown}")
        mde = claim_mde(spread[group], seeds, family, correction)
        if not math.isnan(mde):
            low, high = (100 * claim_mde(spread[group] * f, seeds, family, correction) for f in factors)
            power = (
                f"≈ {100 * mde:.2f} pp (80 % power for the claim over its baseline and both controls, {correction}; "
                f"spread {100 * spread[group]:.2f} pp measured in the exploration, so somewhere in "
                f"{low:.1f}–{high:.1f} pp at 95 %)"
            )
        elif math.isnan(spread[group]):
            power = "unknown (the exploration ran one seed of these configurations: no spread to plan from)"
        else:
            power = "unknown (no spread between the exploration's seeds: each gave the same score)"
        print(f"  {seeds} seeds, claims in a family of {family} configurations: minimum detectable effect {power}")


def _shown(value: float, metric: str) -> str:
    """An objective's value in the unit the rest of the selection uses: an accuracy in %, a loss as it is."""
    return f"{100 * value:.2f} %" if "accuracy" in metric else f"{value:.4f}"


def _existing_study(name: str, storage: str):
    """The study `name` in `storage`, or None when the database or the study does not exist yet."""
    from search.status import load_study

    try:
        return load_study(name, storage)
    except StudyError:
        return None
