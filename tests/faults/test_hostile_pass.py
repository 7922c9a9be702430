"""The hostile pass: each test reproduces one defect it found (the item number in its docstring) and checks the fix.
Spaces refused by their content are in tests/search/space/bad_spaces/ (items 6, 9, 13, 22, 23, 25); Ray's token and the
Slurm script in test_ray_auth.py (11, 12); a copied result.json in tests/search/records/test_study.py (5); the disk that
fills up in test_disk_full.py (25)."""

import os
import sqlite3
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml
from optuna.trial import TrialState
from PIL import Image

from search.records.store import resolve_uri
from tests.conftest import tiny_config, write_digit_folder
from tests.search.helpers import free_port, mounted_tmpfs, search_cli, space, spec, trials, write_space
from trainer import TrialConfig
from trainer.config import ConfigError, DatasetConfig
from trainer.data.decode import decode_image
from trainer.errors import DataError

SEARCH = [sys.executable, "-m", "search"]


def refused(done: subprocess.CompletedProcess, message: str) -> None:
    """Exit 2, one `error:` line holding `message`, no traceback."""
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and done.stderr.count("\n") <= 2, done.stderr


def folder_space(tmp_path: Path, **changes) -> Path:
    """A one-point space on a digit image folder (`imgs/`), 1 epoch, no proxy step."""
    write_digit_folder(tmp_path / "imgs", classes=3, per_class=20)
    data = space(datasets={"f": {"kind": "imagefolder", "root": str(tmp_path / "imgs")}}, grid={"threshold": [0.3]})
    data["fixed"]["proxy_steps"] = "1"
    data.update(changes)
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


# -- 1. exactly-once belongs to the study, wherever its outputs go ----------------------------------------------------
def test_a_second_driver_with_another_out_is_refused(tmp_path):
    """Item 1: `--out runs/A` and `--out runs/B` of one study were two drivers, every point COMPLETE twice."""
    path = write_space(tmp_path / "two.yaml")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; from search.records.storage import DriverLock\n"
            "with DriverLock('sqlite:///runs/tiny.db', 'tiny'):\n    print('held', flush=True); time.sleep(60)",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        done = search_cli("run", str(path), "--out", "runs/B", "--executor", "local", cwd=tmp_path)
        refused(done, f"another driver is running this study (pid {holder.pid}")
    finally:
        holder.kill()
        holder.wait()
    assert not (tmp_path / "runs" / "B").exists()


# -- 2. a study is bound to its data -----------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_changed_dataset_is_refused_then_accepted_and_recorded(tmp_path):
    """Item 2: deleting and adding images between two runs mixed two datasets into one study, silently."""
    path = folder_space(tmp_path)
    assert search_cli("run", str(path), "--executor", "local", cwd=tmp_path, timeout=300).returncode == 0
    imgs = tmp_path / "imgs"
    for name in ("1.png", "2.png", "3.png"):
        (imgs / "0" / name).unlink()
    (imgs / "1" / "new.png").write_bytes((imgs / "2" / "4.png").read_bytes())
    data = yaml.safe_load(path.read_text())
    data["grid"]["threshold"] = [0.3, 0.6]  # a new point, which would train on the changed data
    path.write_text(yaml.safe_dump(data))
    done = search_cli("run", str(path), "--executor", "local", cwd=tmp_path)
    refused(done, "f: 3 files removed (e.g. 0/1.png), 1 files added (e.g. 1/new.png)")
    assert "--accept-data-change" in done.stderr and "--study NEW_NAME" in done.stderr
    assert len(trials(tmp_path)) == 1  # refused before anything was dispatched
    accepted = search_cli("run", str(path), "--executor", "local", "--accept-data-change", cwd=tmp_path, timeout=300)
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert "data changed, accepted" in accepted.stdout
    from search.planning.status import load_study

    study = load_study("tiny", f"sqlite:///{tmp_path}/runs/tiny.db")
    assert [c["dataset"] for c in study.user_attrs["data_changes"]] == ["f"]
    assert search_cli("run", str(path), "--executor", "local", cwd=tmp_path).returncode == 0  # bound to the new data


def test_touching_a_file_is_not_a_change_but_new_contents_are(tmp_path):
    """Item 2: the binding is by content, so a copy on another machine (other times, other inodes) is the same."""
    from search.planning.databind import manifest

    write_digit_folder(tmp_path / "imgs", classes=2, per_class=3)
    dataset = {"kind": "imagefolder", "root": str(tmp_path / "imgs")}
    before = manifest(dataset)
    os.utime(tmp_path / "imgs" / "0" / "1.png", (1, 1))
    assert manifest(dataset)["digest"] == before["digest"]
    first, second = tmp_path / "imgs" / "0" / "1.png", tmp_path / "imgs" / "1" / "1.png"
    a, b = first.read_bytes(), second.read_bytes()
    first.write_bytes(b)
    second.write_bytes(a)
    assert manifest(dataset)["digest"] != before["digest"]


# -- 3. the image cache ----------------------------------------------------------------------------------------------
def test_the_cache_key_changes_when_contents_are_swapped_and_mtimes_restored(tmp_path):
    """Item 3a: two same-size PNGs swapped, mtimes put back with `touch -r`, or the folder swapped by `mv` for
    another with the same listing: the key stayed the same and trials trained on the old pixels."""
    from trainer.data.cache import entry_key, identity

    root = tmp_path / "imgs"
    write_digit_folder(root, classes=2, per_class=3)
    config = DatasetConfig(kind="imagefolder", root=str(root))
    key = entry_key(identity(config, 32))
    a, b = root / "0" / "0.png", root / "0" / "1.png"
    stat_a, stat_b = a.stat(), b.stat()
    data_a, data_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(data_b[: len(data_a)].ljust(len(data_a), b"\0"))
    b.write_bytes(data_a[: len(data_b)].ljust(len(data_b), b"\0"))
    os.utime(a, ns=(stat_a.st_atime_ns, stat_a.st_mtime_ns))
    os.utime(b, ns=(stat_b.st_atime_ns, stat_b.st_mtime_ns))
    assert (a.stat().st_size, a.stat().st_mtime_ns) == (stat_a.st_size, stat_a.st_mtime_ns)
    assert entry_key(identity(config, 32)) != key
    key = entry_key(identity(config, 32))
    twin = tmp_path / "twin"
    write_digit_folder(twin, classes=2, per_class=3)
    root.rename(tmp_path / "old")
    twin.rename(root)
    assert entry_key(identity(config, 32)) != key


def test_a_cache_entry_changed_where_no_checksum_samples_is_caught(tmp_path):
    """Item 3b: the sampled checksums covered 18.7 % of the file; inverted unsampled bytes and labels shifted by
    one class both passed, and a trial trained on them."""
    from trainer.data.cache import LABELS, PIXELS, _verified, ensure, open_cached

    config = DatasetConfig(kind="digits", limit_per_class=None)
    entry = ensure(config, 64, tmp_path)
    labels = np.load(entry.folder / LABELS)
    np.save(entry.folder / LABELS, (labels + 1) % 10)
    assert _verified(entry.folder, entry.key) is None  # rebuilt, not trusted
    entry = ensure(config, 64, tmp_path)
    pixels = entry.folder / PIXELS
    size = pixels.stat().st_size
    with open(pixels, "r+b") as f:  # between the first two sampled blocks
        f.seek(size // 126)
        byte = f.read(1)
        f.seek(size // 126)
        f.write(bytes([255 - byte[0]]))
    assert _verified(entry.folder, entry.key) is not None  # the cheap check cannot see it…
    images = open_cached(config, 64, tmp_path)
    with pytest.raises(DataError, match="does not match its hashes"):
        images.take(np.arange(len(images)))  # …the first read of that chunk does
    assert not entry.folder.exists()  # set aside: the next trial rebuilds it
    rebuilt = open_cached(config, 64, tmp_path)
    assert len(rebuilt.take(np.arange(len(rebuilt)))) == len(labels)


# -- 4. 16-bit images ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["gray16", "rgb16", "rgba16"])
def test_16_bit_pngs_keep_their_grey_levels(tmp_path, mode):
    """Item 4: a 16-bit grayscale PNG decoded to only 0 and 255."""
    ramp = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    path = tmp_path / f"{mode}.png"
    if mode == "gray16":
        Image.fromarray(ramp).save(path)
    else:
        import cv2  # writes 16-bit colour PNGs, which Pillow cannot

        channels = 3 if mode == "rgb16" else 4
        cv2.imwrite(str(path), np.stack([ramp] * channels, axis=-1))
    pixels = decode_image(str(path), 64)
    assert len(np.unique(pixels)) > 200
    expected = np.round(ramp.astype(float) * 255 / 65535)
    assert np.abs(pixels[0].astype(float) - expected).max() <= 2


# -- 7, 8, 16. stores and storage that vanish or cannot be used --------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--artifacts", "memory://x"], "memory:// is gone when this process ends"),
        (["--storage", "sqlite:///:memory:"], "an in-memory database is gone when the run ends"),
        (["--storage", "sqlite://"], "an in-memory database is gone when the run ends"),
        (["--artifacts", "bogus://x"], "artifact store bogus://x"),
        (["--artifacts", "gs://bucket/x"], "artifact store gs://bucket/x"),
        (["--artifacts", "file:///proc/x"], "cannot write in /proc"),
        (["--artifacts", "afile"], "is a file, not a folder"),
        (["--artifacts", "afile/under"], "is a file, not a folder"),
        (["--artifacts", "s3://no-such-bucket/x"], "artifact store s3://no-such-bucket/x is not writable"),
        (["--study", "x" * 300], "a study name has at most 100 characters"),
        (["--study", ""], "is not a valid study name"),
    ],
)
@pytest.mark.parametrize("dry_run", [False, True])
def test_stores_that_vanish_or_cannot_be_used_are_refused_before_anything_is_made(tmp_path, args, message, dry_run):
    """Items 7 and 16: `memory://` reported success and kept nothing; every bad `--artifacts` was a 43-line
    traceback (and `--dry-run` accepted them all); a 300-character name failed inside the filesystem."""
    path = write_space(tmp_path / "s.yaml")
    (tmp_path / "afile").write_text("x")
    before = sorted(p.name for p in tmp_path.iterdir())
    done = search_cli("run", str(path), "--executor", "local", *args, *(["--dry-run"] if dry_run else []), cwd=tmp_path)
    refused(done, message)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_relative_artifacts_path_is_stored_absolute(tmp_path):
    """Item 8: `--artifacts ../relart` was stored as typed, so a resume from another folder wrote a second store."""
    (tmp_path / "project").mkdir()
    assert resolve_uri("../relart").startswith("/")
    path = write_space(tmp_path / "s.yaml")
    done = search_cli("run", str(path), "--artifacts", "../relart", "--dry-run", cwd=tmp_path / "project")
    assert done.returncode == 0, done.stderr
    assert f"trial folders: {tmp_path / 'relart'}/trials/" in done.stdout
    assert resolve_uri("file:///a/b") == "/a/b" and resolve_uri("s3://b/p") == "s3://b/p"


# -- 10, 15, 19. databases that are not ours, locked or damaged ------------------------------------------------------
def test_another_application_s_database_is_never_written(tmp_path):
    """Item 10: 13 Optuna tables were added to a DB holding `customers`, and it was switched to WAL."""
    db = tmp_path / "shop.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER, name TEXT)")
    before = db.read_bytes()
    done = search_cli("run", str(write_space(tmp_path / "s.yaml")), "--storage", f"sqlite:///{db}", cwd=tmp_path)
    refused(done, "holds another application's tables (customers)")
    assert db.read_bytes() == before


@pytest.mark.slow
def test_a_locked_database_is_named_with_its_holder(tmp_path):
    """Item 15: a DB held by `BEGIN EXCLUSIVE` made `run` wait 120 s, then print a traceback."""
    db = tmp_path / "s.db"
    sqlite3.connect(db).close()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import sqlite3, time\nc = sqlite3.connect({str(db)!r}, isolation_level=None)\n"
            "c.execute('BEGIN EXCLUSIVE'); print('held', flush=True); time.sleep(120)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        done = search_cli("run", str(write_space(tmp_path / "s.yaml")), "--storage", f"sqlite:///{db}", cwd=tmp_path)
        refused(done, f"is locked by another process for over 10 s (pid {holder.pid} (python")
        assert time.monotonic() - started < 60
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.slow
def test_a_truncated_database_is_called_damaged(tmp_path):
    """Item 19: `run` on a truncated DB printed "database disk image is malformed" with a traceback; `status`
    blamed a missing schema."""
    path = write_space(tmp_path / "s.yaml", grid={"threshold": [0.3]}, fixed={**space()["fixed"], "proxy_steps": "1"})
    assert search_cli("run", str(path), "--executor", "local", cwd=tmp_path, timeout=300).returncode == 0
    db = tmp_path / "runs" / "tiny.db"
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = db.read_bytes()
    db.write_bytes(data[: len(data) // 2])
    for args in (["run", str(path), "--executor", "local"], ["status", "--study", "tiny"]):
        done = search_cli(*args, cwd=tmp_path)
        refused(done, "is damaged")
        assert ".recover" in done.stderr and "--study NEW_NAME" in done.stderr


# -- 14, 17. files that are not spaces --------------------------------------------------------------------------------
def test_files_that_are_not_short_yaml_text_are_refused_without_reading_them_whole(tmp_path):
    """Items 14 and 17: a 50 MB space took 253 s and 2.6 GB; /dev/zero reached 8.7 GB; a FIFO blocked forever;
    non-UTF-8 and UTF-16 files were UnicodeDecodeError tracebacks."""
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * (2 << 20))
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("study: caf\xe9\n".encode("latin-1"))
    utf16 = tmp_path / "utf16.yaml"
    utf16.write_bytes("study: x\n".encode("utf-16"))
    for path, message in (
        (big, "is larger than 1 MB"),
        (Path("/dev/zero"), "is not a regular file"),
        (fifo, "is not a regular file"),
        (tmp_path, "is a folder"),
        (latin, "is not UTF-8 text (line 1"),
        (utf16, "is UTF-16 text; save it as UTF-8"),
    ):
        refused(search_cli("run", str(path), "--dry-run", cwd=tmp_path, timeout=60), message)


def test_an_alias_bomb_is_refused_at_once_with_a_short_message(tmp_path):
    """Item 13: a 9-level alias bomb ran 120 s to 1.7 GB; at 7 levels the message was 25 MB."""
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    for depth in (7, 9):
        path = tmp_path / f"bomb{depth}.yaml"
        path.write_text("\n".join(levels[:depth]) + "\n")
        started = time.monotonic()
        done = search_cli("run", str(path), "--dry-run", cwd=tmp_path, timeout=60)
        assert time.monotonic() - started < 30
        refused(done, "expands to more than 100,000 values")
        assert len(done.stderr) < 400


def test_a_bad_fixed_value_is_reported_once_at_its_own_key(tmp_path):
    """Item 22: `optimizer.lr: .nan` in fixed: was reported again for every axis (grid.threshold…)."""
    path = write_space(tmp_path / "s.yaml", fixed={**space()["fixed"], "optimizer": {"name": "adamw", "lr": ".nan"}})
    path.write_text(path.read_text().replace("lr: .nan", "lr: .nan").replace("'.nan'", ".nan"))
    done = search_cli("run", str(path), "--dry-run", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.count("optimizer.lr") == 1 and "grid.threshold" not in done.stderr, done.stderr


# -- 18. decompression bombs -------------------------------------------------------------------------------------------
def png_bomb(path: Path, side: int = 30000) -> None:
    """A valid 1-bit PNG of side × side black pixels: 110 KB on disk, 900 M pixels decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\0" + b"\0" * ((side + 7) // 8)
    compressor = zlib.compressobj(9)
    body = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b""))


@pytest.mark.parametrize("cached", [True, False])
def test_a_decompression_bomb_is_skipped_and_counted(tmp_path, cached):
    """Item 18: a 30000×30000 PNG killed the driver while it built the cache."""
    from trainer.data.load import load_images

    root = write_digit_folder(tmp_path / "imgs", classes=2, per_class=6)
    png_bomb(root / "0" / "bomb.png")
    images = load_images(DatasetConfig(kind="imagefolder", root=str(root)), 32, tmp_path / "cache" if cached else None)
    assert images.skipped == 1 and len(images) == 12
    assert images.take(np.arange(len(images))).shape == (12, 3, 32, 32)


# -- 20, 21. read-only folders, dashboards that cannot start --------------------------------------------------------
@pytest.fixture
def read_only_folder(tmp_path):
    """A folder even root cannot write: a read-only tmpfs."""
    yield from mounted_tmpfs(tmp_path / "ro", "ro,size=1m")


def test_a_read_only_folder_is_one_line_not_a_traceback(tmp_path, read_only_folder):
    """Item 20: export, report and run in a read-only project folder were EROFS tracebacks."""
    import optuna

    storage = f"sqlite:///{tmp_path}/s.db"
    optuna.create_study(study_name="s", storage=storage).set_user_attr("space", spec().data)
    for args in (
        ["export", "--study", "s", "--storage", storage, "--out", str(read_only_folder / "t.csv")],
        ["report", "--study", "s", "--storage", storage, "--out", str(read_only_folder / "report")],
        ["run", str(write_space(tmp_path / "s.yaml")), "--executor", "local"],
    ):
        done = search_cli(*args, cwd=read_only_folder)
        assert done.returncode == 2, (args, done.stderr)
        assert "Traceback" not in done.stderr and done.stderr.startswith("error: "), done.stderr
        assert "Read-only file system" in done.stderr or "cannot write" in done.stderr, done.stderr


def test_a_dashboard_that_cannot_listen_says_why(tmp_path):
    """Item 21: an unresolvable host, a port in use and port 99999 were tracebacks; item 25: `127.1` (loopback)
    was warned about as reachable from other machines."""
    import socket

    import optuna

    storage = f"sqlite:///{tmp_path}/s.db"
    optuna.create_study(study_name="s", storage=storage)
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        for args, message in (
            (["--host", "no-such-host.invalid"], "does not resolve"),
            (["--port", "99999"], "expected a port in 1-65535"),
            (["--port", str(busy.getsockname()[1])], "is in use"),
        ):
            refused(search_cli("dashboard", "--storage", storage, *args, cwd=tmp_path), message)
    finally:
        busy.close()
    port = free_port()
    loopback = subprocess.Popen(
        [*SEARCH, "dashboard", "--storage", storage, "--host", "127.1", "--port", str(port)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.3)
    finally:
        loopback.terminate()
        _, err = loopback.communicate(timeout=30)
    assert "reachable from other machines" not in err and "optuna-dashboard on http://127.1" in err


# -- 23. values that failed only inside the trial ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"optimizer": {"name": "sgd", "weight_decay": -1}}, "optimizer.weight_decay: expected a non-negative"),
        ({"optimizer": {"name": "sgd", "weight_decay": float("inf")}}, "expected a finite number"),
        ({"optimizer": {"name": "sgd", "momentum": -5}}, "optimizer.momentum: expected a number in [0, 1)"),
        ({"class_loss_weight": float("inf")}, "class_loss_weight: expected a finite number"),
        ({"target_val_accuracy": float("nan")}, "target_val_accuracy: expected"),
        ({"target_val_accuracy": 2}, "target_val_accuracy: expected an accuracy in [0, 1]"),
        ({"scheduler": {"name": "step", "gamma": 0}}, "scheduler.gamma: expected a factor in (0, 1]"),
        ({"pretrained_path": " "}, "pretrained_path: expected a file path"),
    ],
)
def test_every_number_is_checked_when_the_config_is_built(change, message):
    with pytest.raises(ConfigError) as caught:
        TrialConfig.from_dict(tiny_config(**change))
    assert message in str(caught.value)


def test_a_pretrained_path_that_is_not_a_checkpoint_is_said_so(tmp_path):
    """Item 23: `pretrained_path: /etc/passwd` was an IndexError inside the trial."""
    from trainer.modelcheck import ModelError
    from trainer.models import create_model

    with pytest.raises(ModelError, match="is not a PyTorch state dict"):
        create_model("test_resnet", 3, 64, pretrained_path="/etc/passwd")


# -- 24. repeated signals ----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_five_quick_sigterms_end_as_cleanly_as_one(tmp_path):
    """Item 24: five quick SIGTERMs gave exit 143, no "interrupted" line, and a trial left RUNNING."""
    import signal

    from tests.search.helpers import start_driver

    path = write_space(tmp_path / "s.yaml", fixed={**space()["fixed"], "proxy_steps": "3,p,3"})
    driver = start_driver(path, tmp_path, "local", "--no-share")
    deadline = time.monotonic() + 120
    while not any(t.state == TrialState.RUNNING for t in trials(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.2)
    for _ in range(5):
        driver.send_signal(signal.SIGTERM)
        time.sleep(0.02)
    out, _ = driver.communicate(timeout=120)
    assert driver.returncode == 130, out
    assert "interrupted:" in out and "Traceback" not in out
    assert not [t for t in trials(tmp_path) if t.state == TrialState.RUNNING]


# -- determinism across entry points ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_one_config_gives_the_same_metrics_through_every_entry_point(tmp_path, local_ray):
    """`search trial` gave val 0.183 / test 0.133 where `search run` of the same config gave 0.167 / 0.100: the
    worker set torch's threads to cpus_per_trial, `search trial` did not. One function sets them everywhere."""
    import json

    from tests.conftest import without_timing
    from tests.faults.conftest import run_in_process

    s = spec(grid={"threshold": [0.4]}, resources={"cpus_per_trial": 2, "gpus_per_trial": 0})
    metrics = {}
    for executor in ("local", "ray"):
        code, options = run_in_process(s, tmp_path / executor, executor=executor)
        assert code == 0
        folder = next((options.out_dir / "trials").iterdir())
        result = json.loads((folder / "result.json").read_text())
        assert result["threads"] == 2
        metrics[executor] = without_timing(result["metrics"])
    config = next((tmp_path / "local" / "out" / "trials").iterdir()) / "config.json"
    direct = search_cli("trial", str(config), "--out", str(tmp_path / "direct"), "--threads", "2", cwd=tmp_path)
    assert direct.returncode == 0, direct.stderr
    metrics["trial"] = without_timing(json.loads((tmp_path / "direct" / "result.json").read_text())["metrics"])
    assert metrics["local"] == metrics["ray"] == metrics["trial"]
    assert json.loads((tmp_path / "direct" / "result.json").read_text())["threads"] == 2


@pytest.mark.slow
def test_a_driver_whose_shell_ignored_sigint_still_stops_on_it(tmp_path):
    """Issue 24: a driver started with `&` from a script inherits SIGINT ignored, so `kill -INT` did nothing."""
    import signal

    path = write_space(tmp_path / "s.yaml", fixed={**space()["fixed"], "proxy_steps": "3,p,3"})
    driver = subprocess.Popen(
        [*SEARCH, "run", str(path), "--executor", "local", "--no-share"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),  # what `&` in a script does
    )
    deadline = time.monotonic() + 120
    while not any(t.state == TrialState.RUNNING for t in trials(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.2)
    driver.send_signal(signal.SIGINT)
    out, _ = driver.communicate(timeout=120)
    assert driver.returncode == 130 and "interrupted:" in out, out
