"""The artifact store: where trial and stem folders live, for the driver, every worker and `results/`.

A local path (default `runs/<study>/`, or a shared NFS mount) or any fsspec URL (`s3://bucket/prefix`,
`gs://…`, `file://…`). On a local store a job works in its folder directly. On a remote one it works in node-local
scratch and uploads as it goes: each checkpoint and `metrics.jsonl` after every epoch, proxies after each proxy step,
everything else at the end, `result.json` last. Uploads run in a background thread, so training does not wait on the
network, and an object appears whole or not at all (a local store writes a temporary name, then renames it;
object stores publish an upload only once it is complete). A job starts from the store's newest checkpoint of its
own folder, or of the folder it continues (a retry's earlier try, a shared stem): downloaded into scratch, or on a
local store hard-linked (every file a trial writes is replaced, never modified, so a link never changes under it).
"""

from __future__ import annotations

import os
import queue
import shutil
import threading
import uuid
from pathlib import Path

import fsspec
from fsspec.implementations.local import LocalFileSystem

from trainer.errors import ProxySearchError
from trainer.folder import PROXIES, RESUMABLE, TrialFolder


class StoreError(ProxySearchError, RuntimeError):
    """The store cannot be reached or written; the message says which and why."""


def resolve_uri(uri: str) -> str:
    """The store as every later run, from any folder and any machine, must name it: a local path (or `file://`)
    made absolute; a store that dies with this process (`memory://`) refused."""
    protocol, sep, rest = uri.partition("://")
    if not sep or protocol in ("file", "local"):
        return str(Path(rest if sep else uri).expanduser().resolve())
    if protocol == "memory":
        raise StoreError(f"artifact store {uri}: memory:// is gone when this process ends; give a folder or s3://…")
    return uri


def probe_store(uri: str) -> None:
    """Check that the store can be written before anything is created (in `--dry-run` too): a local one by making
    and removing a folder in its nearest existing ancestor (the store itself is not created), a remote one by
    writing, reading and deleting a marker. Raises `StoreError` saying why not."""
    store = ArtifactStore(uri)
    if not store.local:
        store.check_writable()
        return
    path = Path(store.root)
    while not path.exists():
        path = path.parent
    if not path.is_dir():
        raise StoreError(f"artifact store {uri}: {path} is a file, not a folder")
    probe = path / f".probe-{uuid.uuid4().hex}"
    try:
        probe.mkdir()
        probe.rmdir()
    except OSError as exc:
        raise StoreError(f"artifact store {uri}: cannot write in {path} ({exc.strerror or exc})") from None


class ArtifactStore:
    """Folders under one root URI."""

    def __init__(self, uri: str | Path) -> None:
        self.uri = str(uri)
        try:
            self.fs, root = fsspec.core.url_to_fs(self.uri)
        except (ImportError, ValueError) as exc:
            raise StoreError(f"artifact store {self.uri}: {exc} (for s3:// install s3fs, for gs:// gcsfs)") from None
        self.root = root.rstrip("/")
        self.local = isinstance(self.fs, LocalFileSystem)

    def __repr__(self) -> str:
        return f"ArtifactStore({self.uri!r})"

    def folder(self, rel: str) -> TrialFolder:
        """The folder `rel` (e.g. `trials/12-ab12cd34`) inside the store."""
        return TrialFolder(f"{self.root}/{rel}", self.fs)

    def local_path(self, rel: str) -> Path:
        return Path(self.root) / rel

    def check_writable(self) -> None:
        """Write and remove a marker, so that a store that cannot be used fails before any trial runs."""
        marker = f"{self.root}/.writable-{uuid.uuid4().hex}"
        try:
            self.fs.makedirs(self.root, exist_ok=True)
            self.fs.pipe_file(marker, b"ok")
            if self.fs.cat_file(marker) != b"ok":
                raise OSError("a marker written there reads back differently")
            self.fs.rm_file(marker)
        except Exception as exc:  # each filesystem raises its own kinds
            raise StoreError(f"artifact store {self.uri} is not writable: {type(exc).__name__}: {exc}") from None

    def put(self, local: Path, rel: str) -> None:
        """Upload one local file to `rel`, published whole."""
        target = f"{self.root}/{rel}"
        if self.local:
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            tmp = f"{target}.{uuid.uuid4().hex[:8]}.tmp"
            shutil.copyfile(local, tmp)
            os.replace(tmp, target)
        else:
            self.fs.put_file(str(local), target)

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write `data` to the store file `rel`, published whole."""
        target = f"{self.root}/{rel}"
        if self.local:
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            tmp = f"{target}.{uuid.uuid4().hex[:8]}.tmp"
            Path(tmp).write_bytes(data)
            os.replace(tmp, target)
        else:
            self.fs.pipe_file(target, data)

    def start_from(self, rel: str, source: str | None, workdir: Path) -> bool:
        """Prepare `workdir` to continue the folder `rel`: from its own checkpoint in the store when it has one,
        else from `source`'s (a retry's earlier try, a shared stem). Returns whether a checkpoint was found."""
        for candidate in (rel, source):
            if candidate is None or not self.folder(candidate).has_checkpoint():
                continue
            if self.local and workdir == self.local_path(rel):
                if candidate != rel:
                    _link_resumable(self.local_path(candidate), workdir)
            else:
                self._download_resumable(candidate, workdir)
            return True
        return False

    def _download_resumable(self, rel: str, workdir: Path) -> None:
        folder = self.folder(rel)
        workdir.mkdir(parents=True, exist_ok=True)
        for name in [*RESUMABLE, *folder.proxy_files()]:
            data = folder.read_bytes(name)
            if data is not None:
                (workdir / name).parent.mkdir(parents=True, exist_ok=True)
                (workdir / name).write_bytes(data)

    def fetch(self, rel: str, cache: Path) -> Path | None:
        """A read-only local copy of the store file `rel` (downloaded into `cache` once; in place on a local
        store), or None when it does not exist."""
        if self.local:
            path = self.local_path(rel)
            return path if path.exists() else None
        target = cache / rel
        if not target.exists():
            data = self.folder("").read_bytes(rel)
            if data is None:
                return None
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f"{target.name}.{uuid.uuid4().hex[:8]}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, target)
        return target


def _link_resumable(source: Path, workdir: Path) -> None:
    """Hard-link (or copy, across filesystems) what `workdir` needs to continue `source`."""
    workdir.mkdir(parents=True, exist_ok=True)
    names = [n for n in RESUMABLE if (source / n).exists()]
    names += [str(p.relative_to(source)) for p in sorted((source / PROXIES).glob("step-*.npz"))]
    for name in names:
        target = workdir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.unlink(missing_ok=True)
        try:
            os.link(source / name, target)
        except OSError:
            shutil.copy2(source / name, target)


class Uploader:
    """Uploads a job's saved files in a background thread, in order; a newer copy of a file still waiting
    replaces the older one (only the newest checkpoint matters). `close()` waits for everything."""

    def __init__(self, store: ArtifactStore, workdir: Path, rel: str) -> None:
        self.store, self.workdir, self.rel = store, workdir, rel
        self.staging = workdir.parent / f".{workdir.name}.upload"
        self.staging.mkdir(parents=True, exist_ok=True)
        self.waiting: queue.Queue[tuple[str, Path] | None] = queue.Queue()
        self.newest: dict[str, Path] = {}
        self.lock = threading.Lock()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def __call__(self, names: list[str]) -> None:
        """`names` of the workdir were just written: snapshot them (hard links: the trainer replaces files, so a
        link keeps this version) and queue them."""
        for name in names:
            path = self.workdir / name
            if path.is_dir():
                self(sorted(str(p.relative_to(self.workdir)) for p in path.rglob("*") if p.is_file()))
                continue
            if not path.exists():
                continue
            snapshot = self.staging / f"{uuid.uuid4().hex}-{Path(name).name}"
            try:
                os.link(path, snapshot)
            except OSError:
                shutil.copyfile(path, snapshot)
            with self.lock:
                self.newest[name] = snapshot
            self.waiting.put((name, snapshot))

    def _run(self) -> None:
        while (item := self.waiting.get()) is not None:
            name, snapshot = item
            with self.lock:
                stale = self.newest.get(name) != snapshot
            try:
                if not stale and self.error is None:
                    self.store.put(snapshot, f"{self.rel}/{name}")
            except BaseException as exc:  # reported by close(), in the job's thread
                self.error = exc
            finally:
                snapshot.unlink(missing_ok=True)

    def close(self) -> None:
        """Wait until every queued file is uploaded; raise the first upload error."""
        self.waiting.put(None)
        self.thread.join()
        shutil.rmtree(self.staging, ignore_errors=True)
        if self.error is not None:
            raise StoreError(f"upload to {self.store.uri}/{self.rel} failed: {self.error}") from self.error
