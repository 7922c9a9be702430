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

import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from trainer.errors import ProxySearchError

OPEN_WARNING = (
    "warning: Ray token authentication is off (RAY_AUTH_MODE=disabled): anyone who can reach this machine's Ray "
    "ports can run code on it"
)


class AuthError(ProxySearchError, RuntimeError):
    """No token where one is needed; the message says where to put it."""


def token_source() -> str | None:
    """Where this process's Ray token comes from, or None when there is none. A `$RAY_AUTH_TOKEN_PATH` that names
    no readable, non-empty file is an `AuthError` (Ray would fail later, with less said)."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "$RAY_AUTH_TOKEN"
    path = token_file()
    usable = path.is_file() and path.stat().st_size > 0 and os.access(path, os.R_OK)
    if os.environ.get("RAY_AUTH_TOKEN_PATH") and not usable:
        raise AuthError(
            f"RAY_AUTH_TOKEN_PATH names {path}, which is not a readable, non-empty file: point it at the cluster's "
            "token (the head's ~/.ray/auth_token), or unset it"
        )
    return str(path) if usable else None


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


def check_cluster(address: str) -> None:
    """Before joining the Ray at `address` (HOST:PORT): something answers there, and it takes this machine's token.
    Fails in about a second with one line (`AuthError`) where `ray.init` would retry for tens of seconds, print
    Ray's own warnings and end in a traceback."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise AuthError(f"Ray address {address!r}: expected HOST:PORT (as `search cluster head` prints it)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as exc:
        raise AuthError(
            f"nothing answers at {address} ({exc.strerror or exc}): start the head there (`search cluster head`), "
            "or check the address and the port"
        ) from None
    if os.environ.get("RAY_AUTH_MODE") != "disabled" and token_source() is None:
        raise AuthError(
            f"no Ray token on this machine to join {address}: copy the head's ~/.ray/auth_token to {token_file()} "
            "(or set RAY_AUTH_TOKEN to its contents)"
        )
    from ray._raylet import GcsClient  # type: ignore[attr-defined]

    try:
        with _stderr_to(os.devnull):  # Ray's C++ client logs every refusal on stderr
            GcsClient(address=address).internal_kv_get(b"proxy-attention-search-probe", None, timeout=10)
    except Exception as exc:  # Ray raises its AuthenticationError, RpcError, or a plain RuntimeError
        if "InvalidAuthToken" in str(exc) or type(exc).__name__ == "AuthenticationError":
            raise AuthError(
                f"the Ray at {address} refused this machine's token (from {token_source() or 'nowhere'}): copy the "
                f"head's ~/.ray/auth_token to {token_file()}"
            ) from None
        first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise AuthError(f"cannot join the Ray at {address}: {first[:300]}") from None


@contextlib.contextmanager
def _stderr_to(path: str) -> Iterator[None]:
    """File descriptor 2 (so C++ libraries' output too) sent to `path` for the block."""
    sys.stderr.flush()
    saved = os.dup(2)
    target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.dup2(target, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(target)
