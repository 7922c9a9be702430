"""Crash-safe file writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from trainer.failures import is_disk_full


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """A binary file to write `path` through: a temporary file in the same folder, fsync'd and renamed over `path`
    when the block ends without an error, removed otherwise. Its mode follows the umask, like any file the user
    writes. A full disk raises OSError(ENOSPC) naming the file and
    the space left, and leaves the old file as it was."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.fchmod(fd, 0o666 & ~_umask())  # not mkstemp's 0600, which hid every output from a co-supervisor
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if is_disk_full(exc):
            free = shutil.disk_usage(path.parent).free if path.parent.exists() else 0
            raise OSError(exc.errno, f"disk full while writing {path} ({free} bytes free on that filesystem)") from None
        raise


def _umask() -> int:
    """The process's umask (reading it means setting it: put straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically (`atomic_file`)."""
    with atomic_file(path) as f:
        f.write(data)


def atomic_write_json(path: Path, data: Any) -> None:
    """`atomic_write_bytes` of `data` as indented JSON."""
    atomic_write_bytes(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


def write_jsonl(path: Path, rows: list[dict]) -> None:
    """Replace `path` with one JSON object per line, atomically."""
    atomic_write_bytes(path, "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows).encode())


def load_checkpoint(source: Path | io.BytesIO) -> dict[str, Any]:
    """A checkpoint's tensors and plain data, on the CPU. `weights_only=True`: a checkpoint carrying code is
    refused, never run. The project's only `torch.load` (ruff bans it elsewhere)."""
    import torch

    return torch.load(source, map_location="cpu", weights_only=True)  # noqa: TID251


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, read a block at a time."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/proxy-attention-search` (or `~/.cache/…`): per user and machine, outside datasets and
    runs. The decoded-image cache and the model-check cache live here."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "proxy-attention-search"
