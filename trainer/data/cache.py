"""The decoded-image cache: each (dataset identity, image size) decoded once per machine into one uint8 file.

An entry is a folder `<cache_dir>/<key>/` holding `pixels.u8` (N × 3 × S × S bytes, row i = image i), `labels.npy`
and `meta.json` (classes, files, skipped count, the identity it was built from, sampled checksums). The key hashes the
dataset's identity: for a folder every file's name, size, modification and change times and inode (what git's index
keys on: a restored mtime or a swapped folder still changes it); for a torchvision dataset its kind and
the files under its root; for the bundled ones their source. A changed dataset therefore gets a new entry, never a
stale one. Entries are built under an `flock` (trials starting together build once; the others wait) in a temporary
folder renamed into place, so a reader never sees half an entry. Opening one checks its size, sampled checksums and the
labels' hash: a truncated or damaged entry is rebuilt, not trusted; every chunk of pixels is then checked against its
hash the first time a process reads it (`CheckedRows`), so the whole entry is verified by the reads training does.
Trials read rows with `pread`, so the file lives once in the page cache, shared by every trial of the machine, and a
trial's resident memory does not grow with the dataset.
Where the cache directory cannot be written (read-only, full), trials fall back to decoding, with one warning.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainer.config import DatasetConfig
from trainer.data.decode import UNREADABLE, decode_dataset, decode_image, folder_root, list_image_folder
from trainer.data.identity import Binding, check_binding, dataset_files, dataset_root, manifest
from trainer.data.imagefolder import require_classes
from trainer.data.imageset import ImageSet, load_uncached
from trainer.data.rows import RowFile
from trainer.errors import DataError
from trainer.failures import is_disk_full
from trainer.files import atomic_write_json

log = logging.getLogger("trainer")
FORMAT = 2
PIXELS, LABELS, META = "pixels.u8", "labels.npy", "meta.json"
SAMPLED_BLOCKS, BLOCK = 64, 1 << 16
CHECK_BYTES = 1 << 22  # pixels are verified in chunks of about this size, each the first time a process reads it
Progress = Callable[[int, int], None]


@dataclass
class Entry:
    """A cache entry on disk."""

    key: str
    folder: Path
    meta: dict

    @property
    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.folder.iterdir() if p.is_file())


def identity(config: DatasetConfig, image_size: int) -> dict:
    """What a cache entry is built from; any change to it (a file added, removed or modified) changes the key. The
    files are the dataset's as `trainer.data.identity.dataset_files` lists them (as the study's binding does)."""
    ident: dict = {"format": FORMAT, "kind": config.kind, "image_size": image_size}
    files = dataset_files(config)
    if isinstance(files, str):
        ident["source"] = files
    else:
        ident["root"] = os.path.realpath(dataset_root(config))
        ident["files"] = [[name, *_stat(str(path))] for name, path in files.items()]
    return ident


def _stat(path: str) -> tuple[int, ...]:
    """What git's index keys a file on: a user can set a file's mtime back (`touch -r`), never its ctime, and a
    folder swapped for another (`mv`) has other inodes."""
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev


def entry_key(ident: dict) -> str:
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:24]


def open_cached(
    config: DatasetConfig,
    image_size: int,
    cache_dir: Path,
    progress: Progress | None = None,
    binding: Binding | None = None,
) -> ImageSet:
    """The dataset's images from the cache in `cache_dir`, building the entry first when there is none (or it is
    damaged). A cache dir that cannot be written gives the uncached images, with a warning. With `binding`, an entry
    built from other contents than the study bound is refused (`DataError`)."""
    try:
        entry = ensure(config, image_size, cache_dir, progress)
    except OSError as exc:
        log.warning("decoded-image cache unusable in %s (%s): decoding images without it", cache_dir, exc)
        if binding is not None:
            check_binding(config, binding)
        return load_uncached(config, image_size)
    if binding is not None:
        # The entry's key was just computed from a fresh listing of the files: its count is today's.
        listed = entry.meta.get("identity_files") if config.kind != "digits" else None
        check_binding(config, binding, entry.meta.get("content_digest"), listed)
    return _image_set(entry, image_size)


def ensure(config: DatasetConfig, image_size: int, cache_dir: Path, progress: Progress | None = None) -> Entry:
    """The verified entry of this dataset at this size, built under the entry's lock if missing or damaged.
    Raises OSError when the cache dir cannot be written, DataError when the dataset cannot be read."""
    ident = identity(config, image_size)
    key = entry_key(ident)
    folder = cache_dir / key
    entry = _verified(folder, key)
    if entry is not None:
        return entry
    cache_dir.mkdir(parents=True, exist_ok=True)
    with _locked(cache_dir / f"{key}.lock"):
        entry = _verified(folder, key)  # another process may have built it while we waited
        if entry is not None:
            return entry
        if folder.exists():
            log.warning("decoded-image cache entry %s is damaged: rebuilding it", folder)
            shutil.rmtree(folder)
        return _build(config, image_size, ident, folder, progress)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _verified(folder: Path, key: str) -> Entry | None:
    """The entry at `folder` if it is complete and its size and sampled checksums match, else None."""
    try:
        meta = json.loads((folder / META).read_text())
        pixels = folder / PIXELS
        if meta.get("key") != key or pixels.stat().st_size != meta["bytes"]:
            return None
        if _sampled_checksums(pixels, meta["bytes"]) != meta["checksums"]:
            return None
        if _file_hash(folder / LABELS) != meta["labels_sha1"] or len(meta["chunk_sha1"]) != _chunks(meta):
            return None
    except (OSError, ValueError, KeyError):
        return None
    return Entry(key, folder, meta)


def _sampled_checksums(path: Path, size: int) -> list[str]:
    """SHA-1 of 64 evenly spaced 64 KiB blocks (first and last included): catches truncation, damage and a
    different file in a few milliseconds, where hashing gigabytes at every trial start would not."""
    if size == 0:
        return []
    starts = sorted({min(size - 1, round(i * (size - 1) / (SAMPLED_BLOCKS - 1))) for i in range(SAMPLED_BLOCKS)})
    out = []
    with open(path, "rb") as f:
        for start in starts:
            f.seek(start)
            out.append(hashlib.sha1(f.read(BLOCK), usedforsecurity=False).hexdigest()[:16])
    return out


def _file_hash(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, lambda: hashlib.sha1(usedforsecurity=False)).hexdigest()


def _chunk_rows(row_shape: tuple[int, ...] | list[int]) -> int:
    return max(1, CHECK_BYTES // int(np.prod(row_shape)))


def _chunks(meta: dict) -> int:
    chunk_bytes = meta["chunk_rows"] * int(np.prod(meta["row_shape"]))
    return -(-meta["bytes"] // chunk_bytes)


def _chunk_hashes(path: Path, chunk_bytes: int) -> list[str]:
    out = []
    with open(path, "rb") as f:
        while block := f.read(chunk_bytes):
            out.append(hashlib.sha1(block, usedforsecurity=False).hexdigest()[:16])
    return out


class CheckedRows(RowFile):
    """The rows of a cache entry, each chunk of `chunk_rows` rows checked against its hash the first time this
    process reads it: the whole entry is verified once per process, by the reads training does anyway, and a byte
    changed anywhere (not only where the sampled checksums look) fails the trial instead of training on it. A
    damaged entry is set aside, so the next trial rebuilds it."""

    def __init__(self, entry: Entry, shape: tuple[int, ...]) -> None:
        super().__init__(entry.folder / PIXELS, shape)
        self.entry_folder = entry.folder
        self.chunk_rows = int(entry.meta["chunk_rows"])
        self.hashes = list(entry.meta["chunk_sha1"])
        self.checked: set[int] = set()

    def take(self, rows: np.ndarray) -> np.ndarray:
        for chunk in np.unique(np.asarray(rows, dtype=np.int64) // self.chunk_rows).tolist():
            if chunk not in self.checked:
                self._check(chunk)
        return super().take(rows)

    def _check(self, chunk: int) -> None:
        chunk_bytes = self.chunk_rows * int(np.prod(self.shape))
        data = os.pread(self._open(), chunk_bytes, chunk * chunk_bytes)
        digest = hashlib.sha1(data, usedforsecurity=False).hexdigest()[:16]
        if chunk >= len(self.hashes) or digest != self.hashes[chunk]:
            aside = self.entry_folder.with_name(f"{self.entry_folder.name}.damaged-{os.getpid()}")
            with contextlib.suppress(OSError):  # readers that have it open keep their descriptors
                os.replace(self.entry_folder, aside)
                shutil.rmtree(aside, ignore_errors=True)
            raise DataError(
                f"decoded-image cache entry {self.entry_folder} does not match its hashes (rows "
                f"{chunk * self.chunk_rows}-{(chunk + 1) * self.chunk_rows - 1}): removed; the next trial rebuilds it"
            )
        self.checked.add(chunk)

    def __getstate__(self) -> dict:
        return {**super().__getstate__(), "checked": set()}  # a loader worker checks what it reads itself


def _build(config: DatasetConfig, image_size: int, ident: dict, folder: Path, progress: Progress | None) -> Entry:
    started = time.perf_counter()
    building = folder.with_name(f"{folder.name}.building-{os.getpid()}")
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    try:
        meta = _write_entry(config, image_size, ident, building, progress)
        os.replace(building, folder)
    except BaseException as exc:
        shutil.rmtree(building, ignore_errors=True)
        if is_disk_full(exc):
            raise OSError(exc.errno, f"disk full while building the decoded-image cache in {folder.parent}") from None
        raise
    log.info(
        "decoded-image cache: %d images at %d px in %.1f s -> %s",
        meta["count"],
        image_size,
        time.perf_counter() - started,
        folder,
    )
    return Entry(folder.name, folder, meta)


def _write_entry(config: DatasetConfig, image_size: int, ident: dict, folder: Path, progress: Progress | None) -> dict:
    row_shape = (3, image_size, image_size)
    if config.kind == "imagefolder":
        listed, labels, classes, skipped = list_image_folder(folder_root(config), verify=False)
        files, labels, skipped = _decode_files(listed, labels, image_size, folder / PIXELS, progress, skipped)
        official = None
    else:
        decoded = decode_dataset(config, image_size)
        files, labels, classes, skipped = None, decoded.labels, decoded.classes, decoded.skipped
        official = decoded.official_test
        with open(folder / PIXELS, "wb") as f:
            np.ascontiguousarray(decoded.pixels).tofile(f)  # straight from the array: no second copy
        if progress:
            progress(len(labels), len(labels))
    np.save(folder / LABELS, labels)
    size = (folder / PIXELS).stat().st_size
    meta = {
        "key": folder.name.split(".building")[0],
        "count": len(labels),
        "row_shape": list(row_shape),
        "bytes": size,
        "checksums": _sampled_checksums(folder / PIXELS, size),
        "labels_sha1": _file_hash(folder / LABELS),
        "chunk_rows": _chunk_rows(row_shape),
        "chunk_sha1": _chunk_hashes(folder / PIXELS, _chunk_rows(row_shape) * int(np.prod(row_shape))),
        "classes": classes,
        "files": files,
        "skipped": skipped,
        "official_test": None if official is None else np.flatnonzero(official).tolist(),
        "dataset": {"kind": config.kind, "root": config.root},
        "image_size": image_size,
        "created": time.time(),
        "built_by": os.getpid(),
        "identity_files": len(ident.get("files", [])),
        # The study's data binding digests the same way: a trial compares the two (`trainer.data.identity`).
        "content_digest": manifest(config)["digest"],
    }
    atomic_write_json(folder / META, meta)
    return meta


def _decode_files(
    files: list[str], labels: np.ndarray, image_size: int, path: Path, progress: Progress | None, skipped: int
) -> tuple[list[str], np.ndarray, int]:
    """Decode image files in parallel into `path`, row by row; files that fail to decode are skipped and counted."""
    kept_files, kept_labels = [], []
    chunks = [list(range(i, min(i + 256, len(files)))) for i in range(0, len(files), 256)]
    workers = max(1, min(len(chunks), os.cpu_count() or 1))
    with open(path, "wb") as out, ProcessPoolExecutor(workers) as pool:
        decoded_chunks = pool.map(_decode_chunk, [[files[i] for i in c] for c in chunks], [image_size] * len(chunks))
        for chunk, decoded in zip(chunks, decoded_chunks, strict=True):
            for i, pixels in zip(chunk, decoded, strict=True):
                if pixels is None:
                    skipped += 1
                    log.warning("skipped %s: %s", files[i], UNREADABLE)
                    continue
                out.write(pixels)
                kept_files.append(files[i])
                kept_labels.append(int(labels[i]))
            if progress:
                progress(chunk[-1] + 1, len(files))
    return kept_files, np.asarray(kept_labels, dtype=np.int64), skipped


def _decode_chunk(chunk: list[str], image_size: int) -> list[bytes | None]:
    out: list[bytes | None] = []
    for name in chunk:
        try:
            out.append(decode_image(name, image_size).tobytes())
        except DataError:
            out.append(None)
    return out


def _image_set(entry: Entry, image_size: int) -> ImageSet:
    meta = entry.meta
    labels = np.load(entry.folder / LABELS, allow_pickle=False)
    official = None
    if meta.get("official_test") is not None:
        official = np.zeros(len(labels), dtype=bool)
        official[meta["official_test"]] = True
    classes = meta["classes"]
    if meta["files"] is not None:  # a class whose every file was unreadable has no label left: drop its name
        present = sorted(set(labels.tolist()))
        if len(present) != len(classes):
            remap = {old: new for new, old in enumerate(present)}
            labels = np.asarray([remap[v] for v in labels.tolist()], dtype=np.int64)
            classes = [classes[i] for i in present]
        require_classes(meta["dataset"]["root"], len(classes))
    source = CheckedRows(entry, (3, image_size, image_size))
    return ImageSet(classes, labels, image_size, source, official, meta["files"], meta["skipped"], cached=True)


def entries(cache_dir: Path) -> list[Entry]:
    """Every complete entry in `cache_dir` (unverified: listing is cheap)."""
    found = []
    for folder in sorted(cache_dir.glob("*")) if cache_dir.is_dir() else []:
        if folder.is_dir() and ".building" not in folder.name:
            try:
                found.append(Entry(folder.name, folder, json.loads((folder / META).read_text())))
            except (OSError, ValueError):
                continue
    return found


def remove(entry: Entry) -> None:
    """Delete an entry (under its lock, so no trial is building it)."""
    with _locked(entry.folder.parent / f"{entry.key}.lock"):
        shutil.rmtree(entry.folder, ignore_errors=True)
    (entry.folder.parent / f"{entry.key}.lock").unlink(missing_ok=True)
