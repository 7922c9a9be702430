"""Reading studies from the command line: `status`, `studies`, `export`, `report`, `dashboard`."""

from __future__ import annotations

import errno
import ipaddress
import json
import socket
import sys
from pathlib import Path

import typer

from cli.app import app
from cli.errors import fail
from search.planning.options import storage_of
from search.records.paths import RUNS, run_dir, study_dbs, study_dbs_shown


@app.command(short_help="Where each study stands: counts, best value, ETA.")
def status(
    study: str | None = typer.Option(None, help="study name (default: every study under runs/)"),
    storage: str | None = typer.Option(None, help="Optuna storage URL"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Grid size, complete / stopped / running / failed / waiting / remaining, best value and ETA of each study."""
    from search.planning.status import format_status, load_study, load_trials, study_status

    infos = []
    for name, url in _studies(study, storage):
        infos.append(study_status(load_study(name, url), load_trials(name, url)))
    if as_json:
        print(json.dumps(infos if study is None else infos[0], indent=2, default=str))
    elif infos:
        print("\n".join(format_status(i) for i in infos))
    else:
        where = storage or study_dbs_shown(RUNS.resolve())
        print(f"no studies in {where} (run from the project folder, or give --storage URL / --study NAME)")


@app.command()
def studies(storage: str | None = typer.Option(None, help="Optuna storage URL (default: runs/*.db)")) -> None:
    """List the studies in the storage."""
    for name, url in _studies(None, storage):
        print(f"{name}\t{url}")


def _one_study(study: str | None, storage: str | None) -> tuple[str, str]:
    """The study a command reads: the one named, or the only one in `storage` (or under runs/); a choice is asked
    for when there are several."""
    if study is not None:
        return study, storage_of(study, storage)
    found = _studies(None, storage)
    if len(found) != 1:
        names = ", ".join(name for name, _ in found) or "none"
        fail(f"give --study NAME: {len(found)} studies in {storage or study_dbs_shown()} ({names})")
    return found[0]


def _studies(study: str | None, storage: str | None) -> list[tuple[str, str]]:
    """(name, storage URL) pairs: one named study, or every study in `storage` or in `runs/*.db`."""
    from search.planning.status import study_names

    if study:
        return [(study, storage_of(study, storage))]
    urls = [storage] if storage else [f"sqlite:///{p}" for p in study_dbs()]
    return [(name, url) for url in urls for name in study_names(url)]


@app.command(short_help="One CSV row per trial: settings, metrics, state, why.")
def export(
    study: str | None = typer.Option(None, help="study name (default: the only study there is)"),
    storage: str | None = typer.Option(None, help="Optuna storage URL"),
    out: Path | None = typer.Option(None, help="CSV file (default runs/<study>/trials.csv)"),
) -> None:
    """Write one CSV row per trial: number, state, attempt, every axis's setting, params, metrics, times, failure."""
    from search.planning.status import load_study, load_trials, write_csv
    from search.records.trialtable import export_rows

    study, storage = _one_study(study, storage)
    rows = export_rows(load_study(study, storage), load_trials(study, storage))
    path = out or run_dir(study) / "trials.csv"
    write_csv(rows, path)
    print(f"{len(rows)} trials -> {path}")


@app.command(short_help="Tables (CSV, Markdown, LaTeX) and an HTML report.")
def report(
    study: str | None = typer.Option(None, help="study name (default: the only study there is)"),
    storage: str | None = typer.Option(None, help="Optuna storage URL"),
    out: Path | None = typer.Option(None, help="folder (default runs/<study>/report/)"),
    correction: str = typer.Option("holm", help="multiple-comparison correction: holm, bh or none"),
    to_dashboard: bool = typer.Option(False, help="also save the figures to optuna-dashboard"),
) -> None:
    """Comparison tables (CSV, Markdown, LaTeX) and a self-contained HTML report of plotly figures."""
    from analysis.stats import CORRECTIONS
    from results.report import build_report
    from search.planning.status import load_study, load_trials

    if correction not in CORRECTIONS:
        fail(f"--correction: expected one of {', '.join(CORRECTIONS)}, got {correction!r}")
    study, storage = _one_study(study, storage)
    loaded, trials = load_study(study, storage, writable=to_dashboard), load_trials(study, storage)
    made = build_report(
        loaded,
        trials,
        out or run_dir(study) / "report",
        to_dashboard,
        correction,
        say=lambda line: print(line, file=sys.stderr),
        storage=storage,
    )
    print(f"{made.html} ({len(made.figures)} figures, {len(made.tables)} tables)")


@app.command(short_help="optuna-dashboard on the study database, on loopback.")
def dashboard(
    study: str | None = typer.Option(None, help="study whose default storage to open"),
    storage: str | None = typer.Option(None, help="Optuna storage URL"),
    host: str = typer.Option("127.0.0.1", help="address to listen on"),
    port: int = typer.Option(8080, help="port"),
) -> None:
    """Serve optuna-dashboard on the study database (127.0.0.1 unless --host says otherwise)."""
    from optuna_dashboard import run_server

    from search.records.storage import open_storage

    if storage is None and study is None:
        fail("give --storage URL or --study NAME")
    backend = open_storage(storage_of(study or "", storage), create=False)
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
