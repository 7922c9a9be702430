"""The study database: opening it (SQLite checked first: damaged, locked, foreign, read-only), creating it once
across processes, and the lock that lets one driver at a time run a study."""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from trainer.errors import ProxySearchError
from trainer.files import default_cache_dir


class StudyError(ProxySearchError, RuntimeError):
    """The study cannot be opened or run as asked; the message says why and what to do."""


def open_storage(url: str, create: bool, writable: bool = False) -> optuna.storages.RDBStorage:
    """An RDB storage with a long busy timeout; SQLite files are put in WAL mode so readers never block the
    writer. A creator calls it inside `creating(url)`. With `create=False` (every reader) SQLite is opened read-only
    and nothing is written (unless `writable`: `search report --to-dashboard` stores its figures): a missing file,
    or one without Optuna's schema, is a `StudyError`; one whose schema a starting driver is creating is waited
    for."""
    check_storage_url(url)
    path = _sqlite_path(url)
    if path is None:
        return _rdb_storage(url, create)
    if not create:
        if not path.exists():
            raise StudyError(f"no study database at {path} (run from the project folder, or pass --storage URL)")
        check_readable(url)  # a locked file is named with its holder, never mistaken for one without a schema
        if not _initialized(path):
            wait_for_creator(url)
            if not _initialized(path):
                raise StudyError(f"the study database at {path} has no Optuna schema (not made by `search run`?)")
        if writable:
            check_database_file(path)
        try:
            return _rdb_storage(url if writable else _read_only_url(path), create=False)
        except StudyError as exc:
            raise StudyError(
                f"{exc} (a study copied while its driver ran needs its -wal and -shm files beside it; "
                "copy it again after the run, or from a folder you can write)"
            ) from None
    if path.exists():
        check_database_file(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.closing(sqlite3.connect(path)) as conn:  # journal_mode=WAL persists in the file
        conn.execute("PRAGMA journal_mode=WAL")
    return _rdb_storage(url, create)


LOCK_WAIT = 10.0


def check_database_file(path: Path) -> None:
    """Before a driver writes to an existing SQLite file: it must be a sound SQLite database with one name (a hard
    link is another database to SQLite, and would pass the driver lock), not locked by another process, and hold
    Optuna's schema or nothing (never another application's tables). Raises `StudyError`."""
    if not path.is_file():
        raise StudyError(f"storage {path} is not a file")
    if (links := path.stat().st_nlink) > 1:
        raise StudyError(
            f"{path} has {links} hard links: SQLite takes each name for another database (its own -wal and locks), "
            "so two drivers could write one study at once; keep one name (copy the file instead of linking it)"
        )
    try:
        with contextlib.closing(sqlite3.connect(path, timeout=LOCK_WAIT)) as conn:
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if tables and not {"studies", "alembic_version"} <= tables:
                raise StudyError(
                    f"{path} holds another application's tables ({', '.join(sorted(tables)[:5])}), not an Optuna "
                    "study: give another --storage file"
                )
            if conn.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise sqlite3.DatabaseError("database disk image is malformed")
            conn.execute("BEGIN IMMEDIATE")  # what the driver's first write needs
            conn.execute("ROLLBACK")
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            raise StudyError(_locked(path)) from None
        raise StudyError(f"{path} cannot be opened: {exc}") from None
    except sqlite3.DatabaseError as exc:
        raise StudyError(_damaged(path, exc)) from None


def check_readable(url: str) -> None:
    """Before reading an existing SQLite study: a file another process holds locked is refused in `LOCK_WAIT` s,
    naming the holder (a reader would wait its whole busy timeout, then fail less clearly). Other problems are left
    to the reader that follows."""
    path = _sqlite_path(url)
    if path is None or not path.is_file():
        return
    try:
        with contextlib.closing(sqlite3.connect(_read_only_uri(path), uri=True, timeout=LOCK_WAIT)) as conn:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as exc:  # a damaged file: said by the reader or the driver that follows
        if "locked" in str(exc) or "busy" in str(exc):
            raise StudyError(_locked(path)) from None


def _locked(path: Path) -> str:
    return f"{path} is locked by another process for over {LOCK_WAIT:g} s ({_holders(path)}); wait for it or stop it"


def _damaged(path: Path, exc: BaseException) -> str:
    return (
        f"{path} is damaged ({exc}): restore it from a backup (a copy taken while its driver ran needs its -wal "
        f"file beside it), try `sqlite3 {path} .recover`, or run a new study (--study NEW_NAME)"
    )


def _holders(path: Path) -> str:
    """The processes of this machine that have `path` open (Linux /proc), as `pid 12 (python)`."""
    target, found = str(path.resolve()), []
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            if proc.name != str(os.getpid()) and any(os.readlink(fd) == target for fd in (proc / "fd").iterdir()):
                found.append(f"pid {proc.name} ({(proc / 'comm').read_text().strip()})")
    return ", ".join(found) or "a process on another machine, or one this user cannot see"


def check_storage_url(url: str) -> None:
    """Refuse a storage that keeps nothing (an in-memory SQLite database is gone when the run ends) and SQLite URI
    filenames (`?uri=true`: their path is not the URL's, so the study's lock could not find its database)."""
    path = _sqlite_path(url)
    if (url.startswith("sqlite") and path is None) or str(path) in (":memory:", "") or "mode=memory" in url:
        raise StudyError(f"storage {url}: an in-memory database is gone when the run ends; give a file")
    if path is not None and make_url(url).query.get("uri") not in (None, "false", "0"):
        raise StudyError(f"storage {url}: SQLite URI filenames (uri=…) are not supported; give the file's path")


@contextlib.contextmanager
def creating(url: str) -> Iterator[None]:
    """Held by a driver while it creates or opens the schema, the study and the space stored on it, which Optuna
    writes in several transactions: a reader that finds one of them missing waits for it (`wait_for_creator`).
    An `flock` on `<db>.init-lock` beside an SQLite file, freed by the kernel if the driver dies."""
    path = _sqlite_path(url)
    if path is None:
        yield
        return
    path = database_identity(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".init-lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def wait_for_creator(url: str) -> None:
    """Block while a driver holds `creating(url)`. The lock is opened read-only, and skipped when no driver ever
    made one: a reader never writes."""
    path = _sqlite_path(url)
    if path is None:
        return
    path = database_identity(path)
    try:
        fd = os.open(path.with_name(path.name + ".init-lock"), os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
    finally:
        os.close(fd)


def _read_only_uri(path: Path) -> str:
    """Read-only SQLite: `mode=ro` where a driver may be writing (the folder is writable, or a copy holds a -wal);
    an immutable snapshot for a read-only copy of a finished study, which SQLite can then read without creating
    the -wal and -shm files it otherwise writes beside the database."""
    writable = os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)
    live = writable or path.with_name(path.name + "-wal").exists()
    return f"file:{path.resolve()}?{'mode=ro' if live else 'immutable=1'}"


def _read_only_url(path: Path) -> str:
    return f"sqlite:///{_read_only_uri(path)}&uri=true"


def _sqlite_path(url: str) -> Path | None:
    """The database file of an SQLite URL as SQLAlchemy reads it (`sqlite:///runs/a.db?timeout=30` is
    `runs/a.db`), or None for another database or an in-memory one."""
    if not url.startswith("sqlite"):
        return None
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise StudyError(f"storage {url!r} is not a database URL ({exc})") from None
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    return Path(parsed.database)


def database_identity(path: Path) -> Path:
    """The one name of a database file, whatever spelling reached it: its real path (symlinks, `..` and
    relative parts resolved; the file need not exist yet)."""
    return Path(os.path.realpath(path))


def _initialized(path: Path) -> bool:
    """Whether Optuna finished creating the schema (the alembic stamp is its last step)."""
    try:
        with contextlib.closing(sqlite3.connect(_read_only_uri(path), uri=True, timeout=30)) as conn:
            return conn.execute("SELECT count(*) FROM alembic_version").fetchone()[0] > 0
    except sqlite3.DatabaseError as exc:
        if "malformed" in str(exc) or "not a database" in str(exc):
            raise StudyError(_damaged(path, exc)) from None
        if "locked" in str(exc) or "busy" in str(exc):
            raise StudyError(_locked(path)) from None
        return False


def _rdb_storage(url: str, create: bool) -> optuna.storages.RDBStorage:
    try:
        storage = optuna.storages.RDBStorage(
            url,
            engine_kwargs={"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {},
            skip_table_creation=not create,
        )
        storage.get_all_studies()  # connect now: a file SQLite cannot open fails here, with its reason
    except Exception as exc:  # SQLAlchemy raises many kinds for a bad URL or an unreadable file
        raise StudyError(f"cannot open storage {url}: {exc}") from None
    if (path := _sqlite_path(url)) is not None and "mode=ro" not in url and "immutable=1" not in url:
        if not _WRITERS:
            atexit.register(close_storages)
        _WRITERS.append((storage, path))
    return storage


_WRITERS: list[tuple[optuna.storages.RDBStorage, Path]] = []


def close_storages() -> None:
    """Close every SQLite storage this process opened for writing and fold its write-ahead log into the database
    file, so that the `.db` alone is the whole study (what a student copies, mails or backs up). Called when a
    command exits; a process killed before that leaves the `-wal` beside the file, which SQLite replays at the next
    open. Another process still reading or writing the same file keeps its own `-wal` (SQLite removes it with the
    last connection)."""
    while _WRITERS:
        storage, path = _WRITERS.pop()
        storage.engine.dispose()  # Optuna's pool holds connections open; the last one to close removes the -wal
        checkpoint(path)


def checkpoint(path: Path) -> None:
    """Copy every committed page of `path`'s write-ahead log into the database and empty the log
    (`PRAGMA wal_checkpoint(TRUNCATE)`); a database busy in another process is left to it."""
    if not path.is_file():
        return
    with contextlib.suppress(sqlite3.Error), contextlib.closing(sqlite3.connect(path, timeout=LOCK_WAIT)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()


class DriverLock:
    """An exclusive `flock` that belongs to the study (its database and name), wherever its outputs go: one
    driver per study, so two `search run --out A` / `--out B` of one space can never train a point twice. Beside an
    SQLite file it is `<db>.<study>.<role>-lock`, next to the database's real path, so every spelling of one file
    (a symlink, `..`, a query string such as `?timeout=30`) finds the same lock; for another storage, a file keyed
    by URL and name in this user's cache folder (one machine). The kernel drops it when the holder dies, so a killed
    driver never leaves a stale lock. `role` names what it guards (`driver`; `seeds`: a confirmation choosing and
    recording the exploration's seeds); with `wait`, a held lock is waited for that many seconds before refusing."""

    def __init__(self, storage_url: str, study: str, role: str = "driver", wait: float = 0.0) -> None:
        path = _sqlite_path(storage_url)
        if path is not None:
            path = database_identity(path)
            self.path = path.with_name(f"{path.name}.{study}.{role}-lock")
        else:
            digest = hashlib.sha256(f"{storage_url}\n{study}\n{role}".encode()).hexdigest()[:24]
            self.path = default_cache_dir() / "driver-locks" / f"{digest}.lock"
        self.role, self.wait = role, wait
        self.fd: int | None = None

    def __enter__(self) -> DriverLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.wait
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() < deadline:
                    time.sleep(0.1)
                    continue
                holder = os.pread(self.fd, 400, 0).decode(errors="replace").strip() or "another process"
                os.close(self.fd)
                what = "another driver is running this study"
                if self.role != "driver":
                    what = f"another process has held this study's {self.role} lock for {self.wait:g} s"
                raise StudyError(f"{what} ({holder}; lock {self.path})") from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"pid {os.getpid()} on {os.uname().nodename}, since {time.strftime('%H:%M:%S')}".encode(), 0)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)


def one_line(text: str, limit: int = 500) -> str:
    """The first non-empty line of `text`, shortened to `limit` characters."""
    line = next((ln.strip() for ln in str(text).splitlines() if ln.strip()), "unknown error")
    return line if len(line) <= limit else line[: limit - 1] + "…"
