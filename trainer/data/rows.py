"""uint8 image rows on disk: read by row without mapping them, appended a chunk at a time, stored in an .npz.

A trial must not hold a dataset-sized array: at 224 px one image is 150 KB, so the decoded dataset, the wrong images
of a proxy step, their CAMs and their proxies all grow with N. Each of them lives in a file and is read by row:
the decoded-image cache (`trainer.data.cache`), a step's CAMs and proxies (`trainer.proxy`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from trainer.errors import DataError
from trainer.files import atomic_file

COPY_BYTES = 1 << 24


def read_rows(fd: int, shape: tuple[int, ...], rows: np.ndarray, offset: int, name: str | int) -> np.ndarray:
    """Rows `rows` (each `shape` uint8 bytes, from `offset` on) of the open file `fd`, one `pread` per row into one
    new array, in that order."""
    row_bytes = int(np.prod(shape))
    out = np.empty((len(rows), *shape), dtype=np.uint8)
    for i, row in enumerate(np.asarray(rows, dtype=np.int64)):
        if os.preadv(fd, [memoryview(out[i]).cast("B")], offset + int(row) * row_bytes) != row_bytes:
            raise DataError(f"{name}: row {row} is truncated")
    return out


class RowFile:
    """uint8 rows (R × shape) of a file from `offset` on, read with one `pread` per row: nothing is mapped into
    the process, so reading a whole dataset does not grow its resident memory. Safe in forked loader workers."""

    def __init__(self, path: Path | str, shape: tuple[int, ...], offset: int = 0) -> None:
        self.path, self.shape, self.offset = str(path), tuple(shape), offset
        self._fd: tuple[int, int] | None = None  # (pid, fd): a forked worker opens its own

    def take(self, rows: np.ndarray) -> np.ndarray:
        """Rows `rows` as one (len(rows), *shape) uint8 array, in that order."""
        return read_rows(self._open(), self.shape, rows, self.offset, self.path)

    def _open(self) -> int:
        if self._fd is None or self._fd[0] != os.getpid():
            self._fd = (os.getpid(), os.open(self.path, os.O_RDONLY))
        return self._fd[1]

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fd": None}

    def __del__(self) -> None:
        # A reused worker process runs thousands of trials: each file's descriptor goes with its object.
        if self._fd is not None and self._fd[0] == os.getpid():
            os.close(self._fd[1])


class SpooledRows:
    """uint8 rows of one shape appended chunk by chunk to an anonymous temporary file in `folder` (gone when closed
    or when the process dies), readable by row meanwhile, then copied into an .npz by `write_npz`."""

    def __init__(self, folder: Path, shape: tuple[int, ...]) -> None:
        self.shape, self.count = tuple(shape), 0
        self.file = tempfile.TemporaryFile(dir=folder)  # noqa: SIM115 (lives as long as this object: `close`)

    def __len__(self) -> int:
        return self.count

    def append(self, rows: np.ndarray) -> None:
        """Add rows (K, *shape) at the end."""
        if rows.shape[1:] != self.shape or rows.dtype != np.uint8:
            raise ValueError(f"rows of shape {rows.shape[1:]} {rows.dtype}, expected {self.shape} uint8")
        self.file.seek(0, os.SEEK_END)
        self.file.write(np.ascontiguousarray(rows).data)
        self.count += len(rows)

    def take(self, rows: np.ndarray) -> np.ndarray:
        """Rows `rows`, in that order (what is appended so far)."""
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) and not (rows.min() >= 0 and rows.max() < self.count):
            raise IndexError(f"rows {rows.min()}..{rows.max()} of {self.count}")
        self.file.flush()
        return read_rows(self.file.fileno(), self.shape, rows, 0, self.file.name)

    def close(self) -> None:
        self.file.close()


def write_npz(path: Path, arrays: dict[str, np.ndarray | SpooledRows]) -> None:
    """One uncompressed .npz at `path`, written atomically (`trainer.files.atomic_file`), in the layout `np.savez`
    writes: arrays as they are, spooled rows copied from their file 16 MiB at a time. `npz_rows` reads it back by
    row, `np.load` reads it whole."""
    with atomic_file(path) as f, zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, value in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                if isinstance(value, SpooledRows):
                    header = {"descr": "|u1", "fortran_order": False, "shape": (value.count, *value.shape)}
                    np.lib.format.write_array_header_1_0(member, header)
                    value.file.flush()
                    value.file.seek(0)
                    shutil.copyfileobj(value.file, member, COPY_BYTES)
                else:
                    np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)


def npz_rows(path: Path, member: str) -> RowFile | None:
    """Rows of a uint8 array stored uncompressed in an .npz, read in place; None when it is compressed."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(f"{member}.npy")
        if info.compress_type != zipfile.ZIP_STORED:
            return None
    with open(path, "rb") as f:
        f.seek(info.header_offset + 26)
        name_length, extra_length = np.frombuffer(f.read(4), dtype="<u2")
        f.seek(info.header_offset + 30 + int(name_length) + int(extra_length))
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(f)
        if fortran or dtype != np.uint8:
            return None
        return RowFile(path, shape[1:], f.tell())
