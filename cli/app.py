"""The `search` command line: the app every command module adds to, and what they share. Exit codes: 0 done,
1 trials failed, 2 bad input, 130 interrupted. Bad input is one clear line on stderr (no traceback) and creates
nothing.
"""

from __future__ import annotations

import enum
import sys

import typer
from rich.console import Console

from cli.cluster import cluster_app
from cli.errors import EXIT_BAD_INPUT, SaysNo

# Plain help (rich_markup_mode=None): flags without a `<bool>` value, defaults never cut at 80 columns.
app = typer.Typer(
    cls=SaysNo,
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
