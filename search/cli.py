"""The `search` command line. Exit codes: 0 done, 1 trials failed, 2 bad input, 130 interrupted.

Bad input is one clear line on stderr (no traceback) and creates nothing.
"""

from __future__ import annotations

import enum
import errno
import ipaddress
import json
import logging
import math
import socket
import sys
from pathlib import Path

import typer
from rich.console import Console

from search.cluster import cluster_app
from search.names import study_name_problem
from search.space import DEFAULT_MAX_POINTS, GPUS_ABOVE_ONE, SpaceError, load_space
from search.store import StoreError, probe_store, resolve_uri
from search.study import StudyError, check_storage_url, default_storage

# Plain help (rich_markup_mode=None): flags without a `<bool>` value, defaults never cut at 80 columns.
app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    help="Run, resume, inspect and report grids of Proxy Attention experiments.",
)
cache_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="The decoded-image cache of this machine.")
app.add_typer(cache_app, name="cache")
app.add_typer(cluster_app, name="cluster")
console = Console(stderr=False, soft_wrap=True)  # a message is one line, in logs too
EXIT_BAD_INPUT = 2


class ExecutorKind(enum.StrEnum):
    ray = "ray"
    local = "local"


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        print(f"proxy-attention-search {version('proxy-attention-search')}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="print the version"),
) -> None:
    """Run, resume, inspect and report grids of Proxy Attention experiments."""


def fail(message: str, code: int = EXIT_BAD_INPUT) -> None:
    """Print `error: message` on stderr and exit with `code`."""
    print(f"error: {message}", file=sys.stderr)
    raise typer.Exit(code)


def _study_dir(study: str) -> Path:
    """`runs/<study>`, for a valid study name only: names never become paths unchecked."""
    if (why := study_name_problem(study)) is not None:
        fail(why)
    return Path("runs") / study


def _cache_folder(cache_dir: Path | None) -> Path:
    from trainer.files import default_cache_dir

    return cache_dir or default_cache_dir()


def _cache_dir(cache_dir: Path | None, no_cache: bool) -> str | None:
    return None if no_cache else str(_cache_folder(cache_dir))


EXECUTOR = typer.Option(ExecutorKind.ray, help="where trials run")
RAY_ADDRESS = typer.Option(None, help="join this Ray cluster instead of starting one (see `search cluster`)")
MAX_CONCURRENT = typer.Option(None, help="at most this many jobs at once")
MAX_TRIALS = typer.Option(None, help="start at most this many new trials in this run")
ARTIFACTS = typer.Option(None, help="where trial folders go: a path or fsspec URL (s3://…); default --out")
CACHE_DIR = typer.Option(None, help="decoded-image cache of this machine (default ~/.cache/proxy-attention-search)")
NO_CACHE = typer.Option(False, "--no-cache", help="decode images in every trial, as before the cache")
SCRATCH = typer.Option(None, help="node-local folder where trials work when --artifacts is remote")
NO_SHARE = typer.Option(False, "--no-share", help="train every point from scratch (no shared stems)")
DRY_RUN = typer.Option(False, "--dry-run", help="print what would run and where; touch nothing")
ACCEPT_DATA_CHANGE = typer.Option(
    False, "--accept-data-change", help="go on although a dataset changed since the study ran (recorded in it)"
)


@app.command()
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
) -> None:
    """Create or resume the study of SPACE and run every point that is not finished."""
    try:
        spec = load_space(space, study, check_roots=not dry_run, max_points=max_points)
    except SpaceError as exc:
        fail(str(exc))
    _run_spec(
        spec,
        storage,
        out,
        artifacts,
        executor,
        ray_address,
        gpus_per_trial,
        cpus_per_trial,
        max_concurrent,
        max_trials,
        no_share,
        _cache_dir(cache_dir, no_cache),
        scratch,
        dry_run,
        accept_data_change,
    )


@app.command()
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
    from search.status import load_study
    from search.study import spec_of

    try:
        storage = storage or default_storage(study)
        stored = load_study(study, storage)
        spec = spec_of(stored, validate=not dry_run, max_points=max_points)
        out = out or Path(stored.user_attrs.get("out_dir", _study_dir(study)))
        artifacts = artifacts or stored.user_attrs.get("artifacts")
    except (StudyError, SpaceError) as exc:
        fail(str(exc))
    _run_spec(
        spec,
        storage,
        out,
        artifacts,
        executor,
        ray_address,
        gpus_per_trial,
        cpus_per_trial,
        max_concurrent,
        max_trials,
        no_share,
        _cache_dir(cache_dir, no_cache),
        scratch,
        dry_run,
        accept_data_change,
    )


def _run_spec(
    spec,
    storage,
    out,
    artifacts,
    executor,
    ray_address,
    gpus,
    cpus,
    max_concurrent,
    max_trials,
    no_share,
    cache_dir,
    scratch,
    dry_run,
    accept_data_change=False,
) -> None:
    from search.driver import RunOptions, run_study

    for flag, value in (("--gpus-per-trial", gpus), ("--cpus-per-trial", cpus)):
        if value is not None and value < 0:
            fail(f"{flag}: expected a non-negative number, got {value}")
    if gpus is not None and gpus > 1:
        fail(f"--gpus-per-trial: {GPUS_ABOVE_ONE}, got {gpus:g}")
    for flag, value in (("--max-concurrent", max_concurrent), ("--max-trials", max_trials)):
        if value is not None and value < 1:
            fail(f"{flag}: expected a positive integer, got {value}")
    storage = storage or default_storage(spec.name)
    out_dir = (out or _study_dir(spec.name)).resolve()
    try:
        check_storage_url(storage)
        artifacts = resolve_uri(artifacts or spec.data.get("artifacts") or str(out_dir))
        probe_store(artifacts)
    except (StoreError, StudyError) as exc:
        fail(str(exc))
    if dry_run:
        _print_plan(spec, storage, out_dir, artifacts, not no_share)
        return
    options = RunOptions(
        storage,
        out_dir,
        executor.value,
        ray_address,
        gpus,
        cpus,
        max_concurrent,
        max_trials,
        not no_share,
        artifacts,
        cache_dir or spec.data.get("cache_dir"),
        scratch,
        accept_data_change,
    )
    try:
        code = run_study(spec, options, console)
    except (StudyError, StoreError) as exc:
        fail(str(exc))
    raise typer.Exit(code)


@app.command()
def confirm(
    study: str = typer.Option(..., help="the exploration study to confirm"),
    top: int = typer.Option(3, help="configurations per group, best first by the exploration's objective"),
    per: str = typer.Option("dataset,architecture", help="the axes of a group, comma-separated"),
    seeds: int = typer.Option(10, help="fresh seeds per configuration, disjoint from the exploration's"),
    name: str | None = typer.Option(None, help="the confirmation study (default STUDY-confirm)"),
    storage: str | None = typer.Option(None, help="Optuna storage URL of both studies (default runs/<study>.db)"),
    correction: str = typer.Option("holm", help="the correction the power is planned for: holm, bh or none"),
    executor: ExecutorKind = EXECUTOR,
    ray_address: str | None = RAY_ADDRESS,
    max_concurrent: int | None = MAX_CONCURRENT,
    no_share: bool = NO_SHARE,
    cache_dir: Path | None = CACHE_DIR,
    no_cache: bool = NO_CACHE,
    scratch: str | None = SCRATCH,
    dry_run: bool = DRY_RUN,
) -> None:
    """Run the top configurations of an exploration again on fresh seeds, each beside its matched baselines and
    controls, at full budget and without halving: the study whose verdicts the thesis reports. Run it again to
    resume (its selection stays as first made)."""
    from results.stats import CORRECTIONS, minimum_detectable_effect
    from search.confirm import ConfirmError, confirmation_space, paired_spread, select
    from search.space import parse_space
    from search.status import load_study, load_trials
    from search.study import spec_of

    confirm_name = name or f"{study}-confirm"
    for flag, value, low in (("--top", top, 1), ("--seeds", seeds, 3)):
        if value < low:
            fail(f"{flag}: expected an integer of at least {low}, got {value}")
    if correction not in CORRECTIONS:
        fail(f"--correction: expected one of {', '.join(CORRECTIONS)}, got {correction!r}")
    _study_dir(study), _study_dir(confirm_name)
    exploration_storage = storage or default_storage(study)
    confirm_storage = storage or default_storage(confirm_name)
    try:
        exploration = load_study(study, exploration_storage)
        spec = spec_of(exploration)
        trials = load_trials(study, exploration_storage)
        asked = [a for a in per.split(",") if a]
        unknown = [a for a in asked if a not in (*spec.axes, "dataset", "architecture")]
        if unknown:
            fail(f"--per: {unknown[0]!r} is not an axis of {study} ({', '.join(spec.axes)})")
        per_axes = tuple(a for a in asked if a in spec.axes)  # dataset, architecture: where the study has them
        existing = _existing_study(confirm_name, confirm_storage)
        if existing is not None and existing.user_attrs.get("space", {}).get("confirms") == study:
            # Resumed: the selection stays as first made, whatever the exploration has done since.
            confirmation = spec_of(existing, validate=not dry_run)
            print(f"{confirm_name}: resuming the confirmation of {study} (its selection is kept)", file=sys.stderr)
            selected = {}
        else:
            selected = select(trials, spec, top, per_axes)
            data = confirmation_space(spec, selected, seeds, confirm_name)
            confirmation = parse_space(data, Path(f"<confirmation of {study}>"), confirm_name, check_roots=not dry_run)
    except (StudyError, SpaceError, ConfirmError) as exc:
        fail(str(exc))
    spread = paired_spread(trials, spec, selected)
    for group, chosen in selected.items():
        where = ", ".join(f"{a} {v}" for a, v in group) or "the study"
        print(f"{where}: confirm {len(chosen)} configurations (exploration's mean {spec.objective[0]}):")
        for config in chosen:
            shown = " ".join(f"{k}={v}" for k, v in config.items() if k not in ("_mean", *per_axes))
            print(f"  {config['_mean']:.4f}  {shown}")
        mde = minimum_detectable_effect(spread[group], seeds, len(chosen), correction)
        power = (
            f"≈ {100 * mde:.2f} pp (80 % power, {correction}; spread {100 * spread[group]:.2f} pp from the exploration)"
            if not math.isnan(mde)
            else "unknown (the exploration ran one seed: no spread to plan from)"
        )
        print(f"  {seeds} seeds, families of {len(chosen)} comparisons: minimum detectable effect {power}")
    _run_spec(
        confirmation,
        confirm_storage,
        None,
        None,
        executor,
        ray_address,
        None,
        None,
        max_concurrent,
        None,
        no_share,
        _cache_dir(cache_dir, no_cache),
        scratch,
        dry_run,
    )


def _amount(hours: float) -> str:
    return f"{hours:,.0f}" if hours >= 100 else f"{hours:.1f}" if hours >= 1 else f"{hours:.3f}"


def _print_price(price: dict, share: bool) -> None:
    """The plan's price: per (dataset, architecture) and in total, each rate's evidence said once."""
    unit = price["unit"]
    print(f"price ({unit}; training epochs only: proxy steps and evaluation come on top):")
    for (dataset, arch), group in sorted(price["groups"].items(), key=str):
        hours = group["hours_shared"] if share else group["hours_naive"]
        figure = "unknown" if math.isnan(hours) else _amount(hours)
        print(
            f"  {dataset} × {arch}: {group['naive']:,} epochs ({group['shared']:,} shared): {figure} {unit} "
            f"[{group['rate'].evidence}]"
        )
    parts = [f"{_amount(price['hours_naive'])} each point from scratch"]
    if share:
        parts.append(f"{_amount(price['hours_shared'])} with shared stems")
    if price["hours_halving"] is not None:
        parts.append(f"at most {_amount(price['hours_halving'])} with halving")
    best = price["hours_halving"] if price["hours_halving"] is not None else price["hours_shared"]
    device = "GPU" if unit == "GPU-hours" else "slot"
    wall = ", ".join(f"{n} {device}{'s' if n > 1 else ''}: {_amount(best / n)} h" for n in (1, 8, 32))
    left_out = f" (leaving out {price['unknown']} groups whose data is not there)" if price["unknown"] else ""
    print(f"  total {unit}{left_out}: " + ", ".join(parts) + f"; wall time on {wall}")


def _existing_study(name: str, storage: str):
    """The study `name` in `storage`, or None when the database or the study does not exist yet."""
    from search.status import load_study

    try:
        return load_study(name, storage)
    except StudyError:
        return None


def _print_plan(spec, storage: str, out_dir: Path, artifacts: str, share: bool) -> None:
    from search.status import dry_run_plan

    try:
        info = dry_run_plan(spec, storage, out_dir, artifacts, share)
    except StudyError as exc:
        fail(str(exc))
    ratio = info["epochs_naive"] / max(info["epochs_shared"], 1)
    saving = f" ({ratio:.2f}x fewer)" if info["epochs_shared"] else ""
    print(
        f"study {info['study']}: {info['grid_size']:,} points, {info['complete']:,} complete, {info['pruned']:,} "
        f"stopped by halving, {info['to_run']:,} to run, {info['given_up']:,} given up\n"
        f"epochs to compute: {info['epochs_naive']:,} each point from scratch, {info['epochs_shared']:,} with "
        f"{info['stems']:,} shared stems{saving}" + ("" if share else " [--no-share: not used]")
    )
    if info["epochs_halving"] is not None:
        print(f"with halving: at most {info['epochs_halving']} epochs (against {info['epochs_shared']} without)")
    _print_price(info["price"], share)
    print(f"storage: {info['storage']}\ntrial folders: {info['artifacts']}/trials/")
    for line in info["datasets"]:
        print(f"dataset {line}")
    total = info["grid_size"]
    for i, params in enumerate(info["first_points"], start=1):
        shown = ", ".join(f"{k}={v}" for k, v in params.items())
        print(f"  would run ({i:,} of {info['to_run']:,} to run, {total:,} in the grid): {shown}")
    if info["problems"]:
        fail("; ".join(info["problems"]) + " (search run would refuse this space)")


@app.command()
def status(
    study: str | None = typer.Option(None, help="study name (default: every study under runs/)"),
    storage: str | None = typer.Option(None, help="Optuna storage URL"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Grid size, complete / stopped / running / failed / waiting / remaining, best value and ETA of each study."""
    from search.status import format_status, load_study, load_trials, study_status

    infos = []
    try:
        for name, url in _studies(study, storage):
            infos.append(study_status(load_study(name, url), load_trials(name, url)))
    except StudyError as exc:
        fail(str(exc))
    if as_json:
        print(json.dumps(infos if study is None else infos[0], indent=2, default=str))
    elif infos:
        print("\n".join(format_status(i) for i in infos))
    else:
        where = storage or f"{Path('runs').resolve()}/*.db"
        print(f"no studies in {where} (run from the project folder, or give --storage URL / --study NAME)")


@app.command()
def studies(storage: str | None = typer.Option(None, help="Optuna storage URL (default: runs/*.db)")) -> None:
    """List the studies in the storage."""
    try:
        for name, url in _studies(None, storage):
            print(f"{name}\t{url}")
    except StudyError as exc:
        fail(str(exc))


def _one_study(study: str | None, storage: str | None) -> tuple[str, str]:
    """The study a command reads: the one named, or the only one in `storage` (or under runs/); a choice is asked
    for when there are several."""
    if study is not None:
        _study_dir(study)
        return study, storage or default_storage(study)
    try:
        found = _studies(None, storage)
    except StudyError as exc:
        fail(str(exc))
    if len(found) != 1:
        names = ", ".join(name for name, _ in found) or "none"
        fail(f"give --study NAME: {len(found)} studies in {storage or 'runs/*.db'} ({names})")
    return found[0]


def _studies(study: str | None, storage: str | None) -> list[tuple[str, str]]:
    """(name, storage URL) pairs: one named study, or every study in `storage` or in `runs/*.db`."""
    from search.status import study_names

    if study:
        _study_dir(study)
        return [(study, storage or default_storage(study))]
    urls = [storage] if storage else [f"sqlite:///{p}" for p in sorted(Path("runs").glob("*.db"))]
    return [(name, url) for url in urls for name in study_names(url)]


@app.command()
def export(
    study: str | None = typer.Option(None, help="study name (default: the only study there is)"),
    storage: str | None = typer.Option(None, help="Optuna storage URL"),
    out: Path | None = typer.Option(None, help="CSV file (default runs/<study>/trials.csv)"),
) -> None:
    """Write one CSV row per trial: number, state, attempt, every axis's setting, params, metrics, times, failure."""
    from results.load import export_rows
    from search.status import load_study, load_trials, write_csv

    study, storage = _one_study(study, storage)
    try:
        rows = export_rows(load_study(study, storage), load_trials(study, storage))
    except StudyError as exc:
        fail(str(exc))
    path = out or _study_dir(study) / "trials.csv"
    write_csv(rows, path)
    print(f"{len(rows)} trials -> {path}")


@app.command()
def report(
    study: str | None = typer.Option(None, help="study name (default: the only study there is)"),
    storage: str | None = typer.Option(None, help="Optuna storage URL"),
    out: Path | None = typer.Option(None, help="folder (default runs/<study>/report/)"),
    correction: str = typer.Option("holm", help="multiple-comparison correction: holm, bh or none"),
    to_dashboard: bool = typer.Option(False, help="also save the figures to optuna-dashboard"),
) -> None:
    """Comparison tables (CSV, Markdown, LaTeX) and a self-contained HTML report of plotly figures."""
    from results.report import build_report
    from results.stats import CORRECTIONS
    from search.status import load_study, load_trials

    if correction not in CORRECTIONS:
        fail(f"--correction: expected one of {', '.join(CORRECTIONS)}, got {correction!r}")
    study, storage = _one_study(study, storage)
    try:
        loaded, trials = load_study(study, storage, writable=to_dashboard), load_trials(study, storage)
    except StudyError as exc:
        fail(str(exc))
    made = build_report(
        loaded,
        trials,
        out or _study_dir(study) / "report",
        to_dashboard,
        correction,
        say=lambda line: print(line, file=sys.stderr),
    )
    print(f"{made.html} ({len(made.figures)} figures, {len(made.tables)} tables)")


@app.command()
def dashboard(
    study: str | None = typer.Option(None, help="study whose default storage to open"),
    storage: str | None = typer.Option(None, help="Optuna storage URL"),
    host: str = typer.Option("127.0.0.1", help="address to listen on"),
    port: int = typer.Option(8080, help="port"),
) -> None:
    """Serve optuna-dashboard on the study database (127.0.0.1 unless --host says otherwise)."""
    from optuna_dashboard import run_server

    from search.study import open_storage

    if storage is None and study is None:
        fail("give --storage URL or --study NAME")
    try:
        backend = open_storage(storage or default_storage(study or ""), create=False)
    except StudyError as exc:
        fail(str(exc))
    if not 1 <= port <= 65535:
        fail(f"--port: expected a port in 1-65535, got {port}")
    try:
        addresses = {str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)}
    except (socket.gaierror, UnicodeError) as exc:
        fail(f"--host: {host!r} does not resolve to an address of this machine ({exc})")
    _check_port_free(host, port)
    if not all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses):
        print(
            f"warning: the dashboard listens on {host}, reachable from other machines; it has no login", file=sys.stderr
        )
    print(f"optuna-dashboard on http://{host}:{port}/ (Ctrl-C stops it)", file=sys.stderr)
    run_server(backend, host=host, port=port)


def _check_port_free(host: str, port: int) -> None:
    """Refuse a port another program holds, or an address this machine does not have, before the server starts."""
    for family, kind, proto, _, address in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        with socket.socket(family, kind, proto) as probe:
            try:
                probe.bind(address)
            except OSError as exc:
                what = "is in use" if exc.errno == errno.EADDRINUSE else f"cannot be used ({exc.strerror})"
                fail(f"--port {port} on {host} {what}: choose another --port")


@app.command()
def trial(
    config: Path = typer.Argument(..., help="a trial's config.json"),
    out: Path = typer.Option(..., help="the trial folder"),
    device: str | None = typer.Option(None, help="cpu, cuda, cuda:1… (default: CUDA when available)"),
    cache_dir: Path | None = CACHE_DIR,
    no_cache: bool = NO_CACHE,
    threads: int = typer.Option(1, help="torch CPU threads (as `search run` gives a trial: its cpus_per_trial)"),
) -> None:
    """Run one trial in this process (no Optuna, no Ray): a debugging aid."""
    from trainer import ConfigError, TrialConfig, run_trial
    from trainer.errors import DataError
    from trainer.modelcheck import ModelError

    if threads < 1:
        fail(f"--threads: expected a positive integer, got {threads}")
    try:
        trial_config = TrialConfig.from_json_file(config)
    except ConfigError as exc:
        fail(str(exc))
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    logging.getLogger("trainer").addHandler(handler)
    try:
        result = run_trial(trial_config, out, device, cache_dir=_cache_dir(cache_dir, no_cache), threads=threads)
    except KeyboardInterrupt:
        print("trial failed: interrupted", file=sys.stderr)
        raise typer.Exit(130) from None
    except (DataError, ModelError) as exc:
        fail(str(exc).splitlines()[0])
    except Exception as exc:  # the reason goes on one line, for the person reading
        print(f"trial failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}", file=sys.stderr)
        raise typer.Exit(1) from None
    finally:
        logging.getLogger("trainer").removeHandler(handler)
    print(json.dumps(result.metrics, indent=2))


@cache_app.command("list")
def cache_list(cache_dir: Path | None = CACHE_DIR) -> None:
    """The decoded datasets in the cache: key, dataset, image size, images, size on disk."""
    from trainer.cache import entries

    folder = _cache_folder(cache_dir)
    found = entries(folder)
    for entry in found:
        meta = entry.meta
        print(
            f"{entry.key}\t{meta['dataset']['kind']} {meta['dataset']['root'] or ''}\t{meta['image_size']} px\t"
            f"{meta['count']} images\t{entry.size_bytes / 2**20:.1f} MB"
        )
    print(f"{len(found)} entries in {folder}", file=sys.stderr)


@cache_app.command("clear")
def cache_clear(
    keys: list[str] = typer.Argument(None, help="entries to remove (default: all)"), cache_dir: Path | None = CACHE_DIR
) -> None:
    """Remove cache entries (all of them, or those named); trials rebuild what they need."""
    from trainer.cache import entries, remove

    folder = _cache_folder(cache_dir)
    chosen = [e for e in entries(folder) if not keys or e.key in keys]
    unknown = set(keys or []) - {e.key for e in chosen}
    if unknown:
        fail(f"no cache entry {sorted(unknown)[0]!r} in {folder} (see `search cache list`)")
    freed = sum(e.size_bytes for e in chosen)
    for entry in chosen:
        remove(entry)
    print(f"removed {len(chosen)} entries ({freed / 2**20:.1f} MB) from {folder}")


def main() -> None:
    """Console-script entry point. A file the command cannot write (a read-only folder, a full disk) or a Ctrl-C
    before any work is one line and its exit code, never a traceback."""
    try:
        app()
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: cannot write or read {where}{exc.strerror or exc}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
