"""Launching a run from the command line: flags checked, the store probed, then the plan printed (`--dry-run`) or
the study run."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import typer

from cli.app import console
from cli.errors import fail
from search.planning.options import RunOptions
from search.planning.progress import format_hours
from search.records import record
from search.records.storage import StudyError, check_readable, check_storage_url
from search.records.store import probe_store
from search.run.dispatch import check_machine
from search.run.driver import run_study
from search.space.design import Budget
from search.space.grid import GridSpec
from search.space.spacecheck import root_problems
from trainer.errors import ProxySearchError

if TYPE_CHECKING:
    import optuna


def with_design(
    spec: GridSpec, budget: Budget | None, options: RunOptions, precision: float | None = None, adapt: bool = False
) -> GridSpec:
    """`spec` with the design `budget` buys (or its space's `design:` asks, or its study recorded), said in a few
    lines; unchanged when there is none (`search.planning.budget.plan_design`). A run without any reads only the study's
    stored space here (the driver reads the rest)."""
    import contextlib

    from search.planning.budget import plan_design
    from search.planning.status import load_study, load_trials
    from search.records.study import spec_of

    check_readable(options.storage)  # a locked database: said now, not after a reader's long wait
    study: optuna.Study | None = None
    with contextlib.suppress(StudyError):  # a new study has no design
        study = load_study(spec.name, options.storage)
    recorded = record.stored_design(study)
    if budget is None and precision is None and not adapt and not spec.design and not recorded:
        return spec
    trials = load_trials(spec.name, options.storage) if study is not None else []
    try:
        stored = spec_of(study) if study is not None else None
        planned = plan_design(
            spec, budget, recorded, trials, options.share, options.resources, stored, precision, adapt
        )
    except ProxySearchError as exc:
        fail(f"--budget: {exc}" if budget is not None and not str(exc).startswith("--") else str(exc))
    for line in planned.lines:
        print(line)
    return planned.spec


def launch(spec: GridSpec, options: RunOptions, dry_run: bool) -> None:
    """Check where `options` (`search.planning.options.resolve`) store things, then print the plan or run the study and
    exit
    with its code."""
    check_storage_url(options.storage)
    probe_store(options.artifacts)
    if dry_run:
        problems = []
        if options.ray_address is None:  # the check the run makes of the Ray it starts (a cluster's: when joined)
            try:
                check_machine(options.resources["cpus_per_trial"], options.resources["gpus_per_trial"])
            except ProxySearchError as exc:
                problems.append(str(exc))
        print_plan(spec, options, problems)
        return
    if (spec.design or {}).get("adapt"):  # a design that learns: block by block (search.planning.adaptive)
        from search.planning.adaptive import run_learning
        from search.planning.status import load_trials

        code = run_learning(
            spec, lambda s: run_study(s, options, console), lambda: load_trials(spec.name, options.storage)
        )
    else:
        code = run_study(spec, options, console)
    raise typer.Exit(code)


def _wall(hours: float) -> str:
    """A wall time: hours, minutes or seconds."""
    return (
        f"{format_hours(hours)} h"
        if hours >= 1
        else f"{hours * 60:.1f} min"
        if hours >= 1 / 60
        else f"{hours * 3600:.0f} s"
    )


def print_price(price: dict, share: bool, start_up: tuple[float, str] | None = None) -> None:
    """The plan's price: per (dataset, architecture) and in total, each rate's evidence said once; the wall times
    with the run's own `start_up` (seconds, evidence) added."""
    unit = price["unit"]
    print(f"price ({unit}; training epochs, plus {price['overhead']}):")
    for (dataset, arch), group in sorted(price["groups"].items(), key=str):
        hours = group["hours_shared"] if share else group["hours_naive"]
        figure = "unknown" if math.isnan(hours) else format_hours(hours)
        print(
            f"  {dataset} × {arch}: {group['naive']:,} epochs ({group['shared']:,} shared): {figure} {unit} "
            f"[{group['rate'].evidence}]"
        )
    parts = [f"{format_hours(price['hours_naive'])} each point from scratch"]
    if share:
        parts.append(f"{format_hours(price['hours_shared'])} with shared stems")
    if price["hours_halving"] is not None:
        parts.append(f"at most {format_hours(price['hours_halving'])} with halving")
    best = price["hours_halving"] if price["hours_halving"] is not None else price["hours_shared"]
    device = "GPU" if unit == "GPU-hours" else "slot"
    start, said = start_up or (0.0, "")
    wall = ", ".join(f"{n} {device}{'s' if n > 1 else ''}: {_wall(best / n + start / 3600)}" for n in (1, 8, 32))
    left_out = f" (leaving out {price['unknown']} groups whose data is not there)" if price["unknown"] else ""
    print(f"  total {unit}{left_out}: " + ", ".join(parts) + f"; wall time on {wall}" + (f" ({said})" if said else ""))


def print_plan(spec: GridSpec, options: RunOptions, problems: list[str]) -> None:
    """What `--dry-run` prints: the points, epochs, stems, price (with the run's resources), where things go, and
    the problems to fix (the space's, and `problems` found of the machine), exiting 2 when there are any."""
    from search.planning.status import dry_run_plan

    try:
        info = dry_run_plan(spec, options.storage, options.out_dir, options.artifacts, options.share, options.resources)
    except StudyError as exc:  # a missing dataset root first: it is often why the datasets look changed
        fail("; ".join([*root_problems(spec.to_data()), str(exc)]))
    ratio = info["epochs_naive"] / max(info["epochs_shared"], 1)
    saving = f" ({ratio:.2f}x fewer)" if info["epochs_shared"] else ""
    print(
        f"study {info['study']}: {info['grid_size']:,} points, {info['complete']:,} complete, {info['pruned']:,} "
        f"stopped by halving, {info['to_run']:,} to run, {info['given_up']:,} given up\n"
        f"epochs to compute: {info['epochs_naive']:,} each point from scratch, {info['epochs_shared']:,} with "
        f"{info['stems']:,} shared stems{saving}" + ("" if options.share else " [--no-share: not used]")
    )
    if info["epochs_halving"] is not None:
        print(f"with halving: at most {info['epochs_halving']} epochs (against {info['epochs_shared']} without)")
    print_price(info["price"], options.share, info["start_up"])
    print(f"storage: {info['storage']}\ntrial folders: {info['artifacts']}/trials/")
    for line in info["datasets"]:
        print(f"dataset {line}")
    total = info["grid_size"]
    for i, params in enumerate(info["first_points"], start=1):
        shown = ", ".join(f"{k}={v}" for k, v in params.items())
        print(f"  would run ({i:,} of {info['to_run']:,} to run, {total:,} in the grid): {shown}")
    if info["problems"] or problems:
        fail("; ".join(info["problems"] + problems) + " (search run would refuse this)")
