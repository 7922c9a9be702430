"""Ray's token authentication, on by default for every Ray this tool starts or joins.

Ray's servers listen on every interface of the machine (Ray 2.60 has no setting to bind them to loopback, and
`ray.init` turns a loopback node address into a reachable one), and whoever can talk to them can run code there. So
every Ray this tool starts (a local one for `search run`, `search cluster head/worker`) requires Ray's token
(`RAY_AUTH_MODE=token`): a shared secret in `$RAY_AUTH_TOKEN`, the file `$RAY_AUTH_TOKEN_PATH`, or
`~/.ray/auth_token`, made readable by its owner only. A cluster head makes one when there is none; a worker machine
needs the same token (copy the file, or a shared home folder has it already). Turning it off is an explicit choice:
`search cluster head/worker --no-auth`, and `RAY_AUTH_MODE=disabled` in the environment of `search run`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from trainer.errors import ProxySearchError

OPEN_WARNING = (
    "warning: Ray token authentication is off (RAY_AUTH_MODE=disabled): anyone who can reach this machine's Ray "
    "ports can run code on it"
)


class AuthError(ProxySearchError, RuntimeError):
    """No token where one is needed; the message says where to put it."""


def token_source() -> str | None:
    """Where this process's Ray token comes from, or None when there is none."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "$RAY_AUTH_TOKEN"
    if os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return os.environ["RAY_AUTH_TOKEN_PATH"]
    path = token_file()
    return str(path) if path.is_file() and path.stat().st_size > 0 else None


def token_file() -> Path:
    """The file Ray reads its token from: `$RAY_AUTH_TOKEN_PATH`, else `~/.ray/auth_token`."""
    return Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")


def require_token(ray_command: str | None = None) -> str:
    """Turn token authentication on for this process and the Ray processes it starts, unless the user turned it
    off (`RAY_AUTH_MODE=disabled`: warned). With `ray_command`, make a token when there is none (a cluster head);
    without, a missing token is left to Ray (a local Ray makes its own). Returns the mode in force."""
    if os.environ.get("RAY_AUTH_MODE") == "disabled":
        print(OPEN_WARNING, file=sys.stderr)
        return "disabled"
    os.environ["RAY_AUTH_MODE"] = "token"
    if ray_command is not None and token_source() is None:
        subprocess.run([ray_command, "get-auth-token", "--generate"], check=True, capture_output=True, timeout=120)
    protect_token_file()
    return "token"


def protect_token_file() -> None:
    """Ray writes `~/.ray/auth_token` readable by everyone on the machine: make it its owner's alone."""
    path = token_file()
    try:
        if path.is_file() and path.stat().st_mode & 0o077:
            path.chmod(0o600)
    except OSError:
        pass  # not ours to change (a shared, read-only token file): Ray reads it all the same


def worker_token() -> None:
    """A worker machine joins with the head's token or not at all."""
    if os.environ.get("RAY_AUTH_MODE") != "disabled" and token_source() is None:
        raise AuthError(
            f"no Ray token on this machine: copy the head's {token_file()} here (or set RAY_AUTH_TOKEN to its "
            "contents); `search cluster head` prints where it is. To join a cluster without authentication, pass "
            "--no-auth (anyone who reaches its ports can run code on it)"
        )
