"""Running studies from the command line: `run` (a space file) and `resume` (a stored study)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import typer

from cli.app import (
    ACCEPT_DATA_CHANGE,
    ARTIFACTS,
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
from cli.launch import launch, with_design
from search.planning.options import RunFlags, resolve, storage_of
from search.records.paths import RUNS, run_dir, study_db
from search.space.design import DesignError, parse_budget, parse_precision
from search.space.parse import DEFAULT_MAX_POINTS, load_space

T = TypeVar("T")


def _parsed(flag: str, parse: Callable[[str], T], text: str | None) -> T | None:
    """`text` of `flag` parsed once, before the space is read (the thesis grid takes seconds to load); a malformed
    one is refused in one line naming the flag."""
    if text is None:
        return None
    try:
        return parse(text)
    except DesignError as exc:
        fail(f"{flag}: {exc}")


@app.command(short_help="Create or resume the study of SPACE and run it.")
def run(
    space: Path = typer.Argument(..., help="the space YAML"),
    study: str | None = typer.Option(None, help="study name (default: the YAML's study: or its file name)"),
    storage: str | None = typer.Option(None, help="Optuna storage URL (default sqlite:///runs/<study>.db)"),
    out: Path | None = typer.Option(None, help="the run's folder: driver lock, logs (default runs/<study>/)"),
    artifacts: str | None = ARTIFACTS,
    executor: ExecutorKind = EXECUTOR,
    ray_address: str | None = RAY_ADDRESS,
    gpus_per_trial: float | None = typer.Option(None, help="overrides resources.gpus_per_trial"),
    cpus_per_trial: float | None = typer.Option(None, help="overrides resources.cpus_per_trial"),
    max_concurrent: int | None = MAX_CONCURRENT,
    max_trials: int | None = MAX_TRIALS,
    max_points: int = typer.Option(DEFAULT_MAX_POINTS, help="refuse a grid with more points than this"),
    no_share: bool = NO_SHARE,
    cache_dir: Path | None = CACHE_DIR,
    no_cache: bool = NO_CACHE,
    scratch: str | None = SCRATCH,
    dry_run: bool = DRY_RUN,
    accept_data_change: bool = ACCEPT_DATA_CHANGE,
    budget: str | None = typer.Option(
        None,
        help="run a designed fraction: 5% of the grid's cost, 1200 device-hours, or 120configs per family",
    ),
    precision: str | None = typer.Option(
        None,
        help="a design that learns until every main effect's 95%% half-width is within this (0.5pp), at most --budget",
    ),
    adapt: bool = typer.Option(
        False,
        "--adapt",
        help="a design that learns: each block after the first aimed at what the ones before left open",
    ),
) -> None:
    """Create or resume the study of SPACE and run every point that is not finished (with --budget or a
    `design:` block: a balanced fraction of its proxy configurations, block by block)."""
    parsed, precise = _parsed("--budget", parse_budget, budget), _parsed("--precision", parse_precision, precision)
    spec = load_space(space, study, check_roots=not dry_run, max_points=max_points)
    if storage is None:
        _refuse_a_study_elsewhere(space, spec.name)
    if spec.confirms:  # fresh seeds, no halving and the selection recorded: only `search confirm`
        fail(
            f"{space}: confirms: a confirmation is made by `search confirm --study {spec.confirms}` (fresh "
            "seeds no study of the exploration used, no halving, recorded in the exploration), not written by hand; "
            "resume one with `search confirm` or `search resume`"
        )
    flags = RunFlags(
        storage=storage,
        out=out,
        artifacts=artifacts,
        executor=executor.value,
        ray_address=ray_address,
        gpus_per_trial=gpus_per_trial,
        cpus_per_trial=cpus_per_trial,
        max_concurrent=max_concurrent,
        max_trials=max_trials,
        share=not no_share,
        cache_dir=cache_dir,
        no_cache=no_cache,
        scratch=scratch,
        accept_data_change=accept_data_change,
    )
    options = resolve(spec, flags)
    launch(with_design(spec, parsed, options, precise, adapt), options, dry_run)


def _refuse_a_study_elsewhere(space: Path, name: str) -> None:
    """Run from another folder, `search run ../pa/mine.yaml` would start a new, empty study in ./runs while the
    study of that name lives beside the space file (or a folder above it): say where it is instead."""
    here = study_db(name)
    if here.exists():
        return
    for folder in (space.resolve().parent, space.resolve().parent.parent):
        found = study_db(name, folder / RUNS)
        if found.exists() and found.resolve() != here.resolve():
            fail(
                f"study {name} lives in {found}, not in this folder's runs/: run from {folder}, or pass --storage "
                f"sqlite:///{found} --out {run_dir(name, folder / RUNS)} to go on with it there"
            )


@app.command(short_help="Run the rest of a stored study (no YAML needed).")
def resume(
    study: str = typer.Option(..., help="study name"),
    storage: str | None = typer.Option(None, help="Optuna storage URL"),
    out: Path | None = typer.Option(None, help="the run's folder (default: the one the study was run in)"),
    executor: ExecutorKind = EXECUTOR,
    ray_address: str | None = RAY_ADDRESS,
    max_concurrent: int | None = MAX_CONCURRENT,
    max_trials: int | None = MAX_TRIALS,
    no_share: bool = NO_SHARE,
    cache_dir: Path | None = CACHE_DIR,
    no_cache: bool = NO_CACHE,
    scratch: str | None = SCRATCH,
    dry_run: bool = DRY_RUN,
    accept_data_change: bool = ACCEPT_DATA_CHANGE,
    artifacts: str | None = typer.Option(None, help="where trial folders go (default: where the study put them)"),
    gpus_per_trial: float | None = typer.Option(None, help="overrides resources.gpus_per_trial"),
    cpus_per_trial: float | None = typer.Option(None, help="overrides resources.cpus_per_trial"),
    max_points: int = typer.Option(DEFAULT_MAX_POINTS, help="refuse a grid with more points than this"),
) -> None:
    """Run the rest of a study, reading its space back from the study itself (no YAML needed); every `search run`
    option applies."""
    from search.planning.status import load_study
    from search.records.study import spec_of

    storage = storage_of(study, storage)
    stored = load_study(study, storage)
    spec = spec_of(stored, validate=not dry_run, max_points=max_points)
    flags = RunFlags(
        storage=storage,
        out=out,
        artifacts=artifacts,
        executor=executor.value,
        ray_address=ray_address,
        gpus_per_trial=gpus_per_trial,
        cpus_per_trial=cpus_per_trial,
        max_concurrent=max_concurrent,
        max_trials=max_trials,
        share=not no_share,
        cache_dir=cache_dir,
        no_cache=no_cache,
        scratch=scratch,
        accept_data_change=accept_data_change,
    )
    launch(spec, resolve(spec, flags, stored), dry_run)
