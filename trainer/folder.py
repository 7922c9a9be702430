"""The layout of a trial folder: the one owner of every file name a trial writes and every reader reads.

`runs/<study>/trials/<number>-<grid_key[:8]>/` (and a shared stem's folder) holds `config.json`, `split.json`,
`metrics.jsonl` (one line per epoch), `checkpoint.pt` (each epoch), `proxies/step-K.npz`, `shared/` (a stem's proxy
step inputs), `tensorboard/`, `cams.png`, `trial.log`, `stderr.log` and last, atomically, `result.json`.
A folder is read through an fsspec filesystem (local by default), so the driver and `results/` read a shared
artifact store (`s3://…`) with the same code; the trainer itself only ever writes a local folder.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

CONFIG, SPLIT, METRICS, CHECKPOINT = "config.json", "split.json", "metrics.jsonl", "checkpoint.pt"
PROXIES, SHARED, TENSORBOARD, GALLERY = "proxies", "shared", "tensorboard", "cams.png"
LOG, STDERR, RESULT, OUTCOME = "trial.log", "stderr.log", "result.json", "outcome.json"
# What a later try (or a branch of a shared stem) needs to continue where this folder stopped.
RESUMABLE = (CHECKPOINT, SPLIT, METRICS)


def proxy_file(step: int) -> str:
    """`proxies/step-K.npz`: a trial's proxies of step K (0-based), relative to its folder."""
    return f"{PROXIES}/step-{step}.npz"


def shared_input(step: int, group: str) -> str:
    """`shared/step-K-<group>.npz`: a stem's proxy-step inputs (wrong images, CAMs) for one CAM group, relative to
    the stem's folder."""
    return f"{SHARED}/step-{step}-{group}.npz"


class TrialFolder:
    """One trial's (or stem's) folder at `root` on `fs` (local when None)."""

    def __init__(self, root: str | Path, fs: fsspec.AbstractFileSystem | None = None) -> None:
        self.fs = fs or LocalFileSystem()
        self.root = str(root).rstrip("/")

    def __repr__(self) -> str:
        return f"TrialFolder({self.root!r})"

    @property
    def local(self) -> bool:
        return isinstance(self.fs, LocalFileSystem)

    @property
    def path(self) -> Path:
        """The folder as a local path (only for a local folder)."""
        if not self.local:
            raise ValueError(f"{self.root} is not a local folder")
        return Path(self.root)

    def file(self, name: str) -> str:
        """The full path (or URL path) of `name` inside the folder."""
        return f"{self.root}/{name}"

    def proxy_name(self, step: int) -> str:
        """`proxies/step-K.npz`, relative to the folder."""
        return proxy_file(step)

    def exists(self, name: str = "") -> bool:
        return self.fs.exists(self.file(name) if name else self.root)

    def read_bytes(self, name: str) -> bytes | None:
        """A file's bytes, or None when it is absent or unreadable."""
        try:
            return self.fs.cat_file(self.file(name))
        except (OSError, ValueError):
            return None

    def read_json(self, name: str) -> Any | None:
        """A JSON file's content, or None when absent, unreadable or half-written."""
        data = self.read_bytes(name)
        try:
            return None if data is None else json.loads(data)
        except ValueError:
            return None

    def read_result(self) -> dict | None:
        """`result.json`: present only when the trial finished (it is written last, atomically)."""
        result = self.read_json(RESULT)
        return result if isinstance(result, dict) and "metrics" in result else None

    def read_metrics(self) -> list[dict]:
        """The per-epoch rows of `metrics.jsonl` ([] when absent); a torn last line is ignored."""
        data = self.read_bytes(METRICS)
        rows = []
        for line in (data or b"").decode(errors="replace").splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                break
        return rows

    def has_checkpoint(self) -> bool:
        return self.exists(CHECKPOINT)

    def proxy_files(self) -> list[str]:
        """The proxy step files present, relative to the folder, in step order."""
        try:
            names = self.fs.ls(self.file(PROXIES), detail=False)
        except (OSError, ValueError):
            return []
        found = [f"{PROXIES}/{Path(n).name}" for n in names if Path(n).name.startswith("step-")]
        return sorted(found, key=lambda n: int(Path(n).stem.split("-")[1]))

    def open_checkpoint(self) -> io.BytesIO | None:
        """The checkpoint's bytes as a file object, or None."""
        data = self.read_bytes(CHECKPOINT)
        return None if data is None else io.BytesIO(data)
