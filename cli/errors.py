"""How every command says no: one `error:` line on stderr and an exit code (2: bad input), never a traceback."""

from __future__ import annotations

import sys
from typing import Any, NoReturn

import typer
from typer.core import TyperGroup

from trainer.errors import ProxySearchError

EXIT_BAD_INPUT = 2


def fail(message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    """Print `error: message` on stderr and exit with `code`."""
    print(f"error: {message}", file=sys.stderr)
    raise typer.Exit(code)


class SaysNo(TyperGroup):
    """The command group that turns every `ProxySearchError` a command raises (bad input, a study that cannot be
    opened, a design that cannot be made) into its one `error:` line and exit 2: the one place the CLI says no."""

    def invoke(self, ctx: Any) -> Any:  # typer's vendored click.Context
        try:
            return super().invoke(ctx)
        except ProxySearchError as exc:
            fail(str(exc))
