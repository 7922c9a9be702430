"""The `search` command line (DESIGN §2). Exit codes: 0 done, 1 trials failed, 2 bad input, 130 interrupted.

Bad input is one clear line on stderr (no traceback) and creates nothing.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from search.space import STUDY_NAME, SpaceError, load_space, missing_roots
from search.study import StudyError, default_storage

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True,
                  help="Run, resume, inspect and report grids of Proxy Attention experiments.")
console = Console(stderr=False, soft_wrap=True)  # a message is one line, in logs too
EXIT_BAD_INPUT = 2


def fail(message: str, code: int = EXIT_BAD_INPUT) -> None:
    """Print `error: message` on stderr and exit with `code`."""
    print(f"error: {message}", file=sys.stderr)
    raise typer.Exit(code)


def _study_dir(study: str) -> Path:
    """`runs/<study>`, for a valid study name only: names never become paths unchecked."""
    if not STUDY_NAME.match(study):
        fail(f"{study!r} is not a valid study name (letters, digits, '_', '.', '-'; starting with a letter or digit)")
    return Path("runs") / study


def _out_dir(study: str, out: Optional[Path]) -> Path:
    return (out or _study_dir(study)).resolve()


@app.command()
def run(space: Path = typer.Argument(..., help="the space YAML"),
        study: Optional[str] = typer.Option(None, help="study name (default: the YAML's study: or its file name)"),
        storage: Optional[str] = typer.Option(None, help="Optuna storage URL (default sqlite:///runs/<study>.db)"),
        out: Optional[Path] = typer.Option(None, help="folder for trial folders (default runs/<study>/)"),
        executor: str = typer.Option("ray", help="ray or local"),
        ray_address: Optional[str] = typer.Option(None, help="join this Ray cluster instead of starting one"),
        gpus_per_trial: Optional[float] = typer.Option(None, help="overrides resources.gpus_per_trial"),
        cpus_per_trial: Optional[float] = typer.Option(None, help="overrides resources.cpus_per_trial"),
        max_concurrent: Optional[int] = typer.Option(None, help="at most this many trials at once"),
        max_trials: Optional[int] = typer.Option(None, help="start at most this many trials in this run"),
        dry_run: bool = typer.Option(False, help="print what would run and where; touch nothing")) -> None:
    """Create or resume the study of SPACE and run every point without a COMPLETE trial."""
    try:
        spec = load_space(space, study, check_roots=not dry_run)
    except SpaceError as exc:
        fail(str(exc))
    _run_spec(spec, storage, out, executor, ray_address, gpus_per_trial, cpus_per_trial, max_concurrent,
              max_trials, dry_run)


@app.command()
def resume(study: str = typer.Option(..., help="study name"),
           storage: Optional[str] = typer.Option(None, help="Optuna storage URL"),
           out: Optional[Path] = typer.Option(None, help="folder for trial folders"),
           executor: str = typer.Option("ray", help="ray or local"),
           ray_address: Optional[str] = typer.Option(None, help="join this Ray cluster")) -> None:
    """Run the rest of a study, reading its space back from the study itself."""
    from search.inspect import load_study
    from search.study import spec_of

    try:
        storage = storage or default_storage(study)
        stored = load_study(study, storage)
        spec = spec_of(stored, validate=True)
        out = out or Path(stored.user_attrs.get("out_dir", _study_dir(study)))
    except (StudyError, SpaceError) as exc:
        fail(str(exc))
    _run_spec(spec, storage, out, executor, ray_address, None, None, None, None, False)


def _run_spec(spec, storage, out, executor, ray_address, gpus, cpus, max_concurrent, max_trials, dry_run) -> None:
    from search.driver import RunOptions, run_study

    if executor not in ("ray", "local"):
        fail(f"--executor: expected ray or local, got {executor!r}")
    for flag, value in (("--gpus-per-trial", gpus), ("--cpus-per-trial", cpus)):
        if value is not None and value < 0:
            fail(f"{flag}: expected a non-negative number, got {value}")
    for flag, value in (("--max-concurrent", max_concurrent), ("--max-trials", max_trials)):
        if value is not None and value < 1:
            fail(f"{flag}: expected a positive integer, got {value}")
    storage = storage or default_storage(spec.name)
    out_dir = _out_dir(spec.name, out)
    if dry_run:
        from search.inspect import plan

        try:
            info = plan(spec, storage, out_dir)
        except StudyError as exc:
            fail(str(exc))
        print(f"study {info['study']}: {info['grid_size']} points, {info['complete']} complete, "
              f"{info['to_run']} to run, {info['given_up']} given up\n"
              f"storage: {info['storage']}\ntrial folders: {info['out_dir']}/trials/")
        for params in info["first_points"]:
            print(f"  would run: {params}")
        for line in missing_roots(spec):
            print(f"warning: dataset {line} does not exist yet; those trials would fail")
        return
    options = RunOptions(storage, out_dir, executor, ray_address, gpus, cpus, max_concurrent, max_trials)
    try:
        code = run_study(spec, options, console)
    except StudyError as exc:
        fail(str(exc))
    raise typer.Exit(code)


@app.command()
def status(study: Optional[str] = typer.Option(None, help="study name (default: every study under runs/)"),
           storage: Optional[str] = typer.Option(None, help="Optuna storage URL"),
           as_json: bool = typer.Option(False, "--json", help="print JSON")) -> None:
    """Grid size, complete / running / failed / waiting / remaining, best value and ETA of each study."""
    from search.inspect import format_status, load_study, load_trials, status as study_status

    infos = []
    try:
        for name, url in _studies(study, storage):
            infos.append(study_status(load_study(name, url), load_trials(name, url)))
    except StudyError as exc:
        fail(str(exc))
    if as_json:
        print(json.dumps(infos if study is None else infos[0], indent=2, default=str))
    else:
        print("\n".join(format_status(i) for i in infos) or "no studies")


@app.command()
def studies(storage: Optional[str] = typer.Option(None, help="Optuna storage URL (default: runs/*.db)")) -> None:
    """List the studies in the storage."""
    try:
        for name, url in _studies(None, storage):
            print(f"{name}\t{url}")
    except StudyError as exc:
        fail(str(exc))


def _studies(study: Optional[str], storage: Optional[str]) -> list[tuple[str, str]]:
    """(name, storage URL) pairs: one named study, or every study in `storage` or in `runs/*.db`."""
    from search.inspect import study_names

    if study:
        return [(study, storage or default_storage(study))]
    urls = [storage] if storage else [f"sqlite:///{p}" for p in sorted(Path("runs").glob("*.db"))]
    return [(name, url) for url in urls for name in study_names(url)]


@app.command()
def export(study: str = typer.Option(..., help="study name"),
           storage: Optional[str] = typer.Option(None, help="Optuna storage URL"),
           out: Optional[Path] = typer.Option(None, help="CSV file (default runs/<study>/trials.csv)")) -> None:
    """Write one CSV row per trial: number, grid_key, state, attempt, params, metrics, durations, failure."""
    from results.load import trial_rows
    from search.inspect import load_trials, write_csv

    try:
        rows = trial_rows(load_trials(study, storage or default_storage(study)))
    except StudyError as exc:
        fail(str(exc))
    path = out or _study_dir(study) / "trials.csv"
    write_csv(rows, path)
    print(f"{len(rows)} trials -> {path}")


@app.command()
def report(study: str = typer.Option(..., help="study name"),
           storage: Optional[str] = typer.Option(None, help="Optuna storage URL"),
           out: Optional[Path] = typer.Option(None, help="folder (default runs/<study>/report/)"),
           to_dashboard: bool = typer.Option(False, help="also save the figures to optuna-dashboard")) -> None:
    """Comparison tables (CSV, Markdown, LaTeX) and a self-contained HTML report of plotly figures."""
    from results.report import build_report
    from search.inspect import load_study, load_trials

    try:
        storage = storage or default_storage(study)
        loaded, trials = load_study(study, storage), load_trials(study, storage)
    except StudyError as exc:
        fail(str(exc))
    made = build_report(loaded, trials, out or _study_dir(study) / "report", to_dashboard,
                        say=lambda line: print(line, file=sys.stderr))
    print(f"{made.html} ({len(made.figures)} figures, {len(made.tables)} tables)")


@app.command()
def dashboard(study: Optional[str] = typer.Option(None, help="study whose default storage to open"),
              storage: Optional[str] = typer.Option(None, help="Optuna storage URL"),
              host: str = typer.Option("127.0.0.1", help="address to listen on"),
              port: int = typer.Option(8080, help="port")) -> None:
    """Serve optuna-dashboard on the study database (127.0.0.1 unless --host says otherwise)."""
    from optuna_dashboard import run_server

    from search.study import open_storage

    if not storage and not study:
        fail("give --storage URL or --study NAME")
    try:
        backend = open_storage(storage or default_storage(study), create=False)
    except StudyError as exc:
        fail(str(exc))
    if not _is_loopback(host):
        print(f"warning: the dashboard listens on {host}, reachable from other machines; it has no login",
              file=sys.stderr)
    print(f"optuna-dashboard on http://{host}:{port}/ (Ctrl-C stops it)", file=sys.stderr)
    run_server(backend, host=host, port=port)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@app.command()
def trial(config: Path = typer.Argument(..., help="a trial's config.json"),
          out: Path = typer.Option(..., help="the trial folder"),
          device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:1… (default: CUDA when available)")) -> None:
    """Run one trial in this process (no Optuna, no Ray): what each Ray task does, and a debugging aid."""
    from search.dispatch import FAILURE_PREFIX
    from trainer import ConfigError, TrialConfig, run_trial
    from trainer.data import DataError
    from trainer.models import ModelError

    try:
        trial_config = TrialConfig.from_json_file(config)
    except ConfigError as exc:
        fail(str(exc))
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    logging.getLogger("trainer").addHandler(handler)
    try:
        result = run_trial(trial_config, out, device)
    except KeyboardInterrupt:
        print(f"{FAILURE_PREFIX}interrupted", file=sys.stderr)
        raise typer.Exit(130) from None
    except Exception as exc:  # the reason goes on one line, for the driver and the person reading
        print(f"{FAILURE_PREFIX}{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
              file=sys.stderr)
        raise typer.Exit(EXIT_BAD_INPUT if isinstance(exc, (DataError, ModelError)) else 1) from None
    finally:
        logging.getLogger("trainer").removeHandler(handler)
    print(json.dumps(result.metrics, indent=2))


def main() -> None:
    """Console-script entry point."""
    app()
