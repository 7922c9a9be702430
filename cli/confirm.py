"""`search confirm`: the confirmation stage of an exploration from the command line (its selection, observed or
by the effects model, its seeds, its planned power, its record on the exploration)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

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
from search.planning.confirmation import Ask, ConfirmationPlan, data_origin, existing_study, plan_confirmation
from search.planning.options import RunFlags, resolve, storage_of
from search.records import record
from search.records.paths import run_dir


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
    ask = Ask(
        study,
        storage_of(study, storage),
        confirm_name,
        storage_of(confirm_name, storage),
        top,
        per,
        seeds,
        select,
        allow_test_overlap,
    )
    plan = plan_confirmation(ask, dry_run)
    for line in plan.warnings:
        print(line, file=sys.stderr)
    if plan.chosen_now:
        _print_selection(plan, seeds, correction)
    flags = RunFlags(
        storage=ask.confirm_storage,
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
    existing = existing_study(confirm_name, ask.confirm_storage)
    origin = None
    if existing is None or not record.bound_data(existing):  # once bound, the confirmation keeps its own
        origin = data_origin(study, ask.storage)
    launch(plan.spec, resolve(plan.spec, flags, origin=origin), dry_run)


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


def _print_selection(plan: ConfirmationPlan, seeds: int, correction: str) -> None:
    """Each group's chosen configurations, and the smallest effect the confirmation's claims can detect: they are
    one family over the whole study (`results.claims`), so the plan uses the number of configurations selected in
    all, with the range the spread may have, estimated from the exploration's few seeds."""
    from scipy import stats

    from analysis.stats import claim_mde

    spec, selected, spread, per_axes = plan.exploration, plan.selected, plan.spread, plan.per_axes
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
    first = plan.spec.seeds.start
    print(f"seeds {first}–{first + seeds - 1}: none used by {spec.name} or by a confirmation made from it before")


def _shown(value: float, metric: str) -> str:
    """An objective's value in the unit the rest of the selection uses: an accuracy in %, a loss as it is."""
    return f"{100 * value:.2f} %" if "accuracy" in metric else f"{value:.4f}"
