"""The decoded-image cache: same split and metrics as without it, a new entry for a changed dataset, one build for
trials that start together, damaged entries rebuilt, and a cache dir that cannot be written never a crash."""

import json
import logging
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import tiny_config, write_digit_folder
from tests.trainer.test_loop import comparable, metrics_lines
from trainer import TrialConfig, run_trial
from trainer.config import DatasetConfig
from trainer.data.batching import Part, batches
from trainer.data.cache import LABELS, META, PIXELS, ensure, entries, entry_key, identity
from trainer.data.load import load_images
from trainer.errors import DataError

ROOT = Path(__file__).resolve().parents[2]


def folder_config(root: Path) -> DatasetConfig:
    return DatasetConfig(kind="imagefolder", root=str(root))


def test_the_cache_gives_the_same_split_and_metrics(tmp_path):
    folder = write_digit_folder(tmp_path / "digits", classes=3, per_class=20, size=48)
    config = TrialConfig.from_dict(
        tiny_config(dataset={"kind": "imagefolder", "root": str(folder)}, proxy_steps="1,p,1")
    )
    plain = run_trial(config, tmp_path / "plain")
    cached = run_trial(config, tmp_path / "cached", cache_dir=tmp_path / "cache")
    assert (tmp_path / "plain" / "split.json").read_text() == (tmp_path / "cached" / "split.json").read_text()
    assert comparable([plain.metrics]) == comparable([cached.metrics])
    assert comparable(metrics_lines(tmp_path / "plain")) == comparable(metrics_lines(tmp_path / "cached"))
    assert "decoded-image cache" in (tmp_path / "cached" / "trial.log").read_text()
    uncached = load_images(folder_config(folder), 64)
    from_cache = load_images(folder_config(folder), 64, tmp_path / "cache")
    assert from_cache.files == uncached.files and np.array_equal(from_cache.labels, uncached.labels)
    rows = np.arange(len(uncached))
    assert torch.equal(from_cache.take(rows), uncached.take(rows))  # byte for byte
    assert not list(folder.rglob("*.u8"))  # nothing written into the dataset


def test_a_changed_dataset_gets_a_new_entry(tmp_path):
    folder = write_digit_folder(tmp_path / "digits", classes=2, per_class=5)
    cache = tmp_path / "cache"
    first = ensure(folder_config(folder), 32, cache)
    assert ensure(folder_config(folder), 32, cache).key == first.key  # unchanged: the same entry
    (folder / "0" / "extra.png").write_bytes((folder / "0" / "0.png").read_bytes())  # a file added
    added = ensure(folder_config(folder), 32, cache)
    assert added.key != first.key and added.meta["count"] == first.meta["count"] + 1
    (folder / "1" / "0.png").write_bytes((folder / "1" / "1.png").read_bytes())  # a file modified
    os.utime(folder / "1" / "0.png", ns=(time.time_ns(), time.time_ns() + 10**9))
    modified = ensure(folder_config(folder), 32, cache)
    assert modified.key not in (first.key, added.key)
    (folder / "0" / "extra.png").unlink()  # a file removed
    assert ensure(folder_config(folder), 32, cache).key not in (added.key, modified.key)
    assert ensure(folder_config(folder), 48, cache).key != modified.key  # another size: another entry
    assert len(entries(cache)) == 5


BUILD = """
import json, os, sys
from trainer.data.cache import ensure
from trainer.config import DatasetConfig
entry = ensure(DatasetConfig(kind="imagefolder", root=sys.argv[1]), 64, __import__("pathlib").Path(sys.argv[2]))
print(json.dumps({"pid": os.getpid(), "built_by": entry.meta["built_by"], "key": entry.key}))
"""


@pytest.mark.slow
def test_trials_starting_together_build_one_entry(tmp_path):
    folder = write_digit_folder(tmp_path / "digits", classes=4, per_class=40, size=64)
    cache = tmp_path / "cache"
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", BUILD, str(folder), str(cache)], cwd=ROOT, stdout=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    outputs = [json.loads(p.communicate(timeout=300)[0]) for p in processes]
    assert len({o["key"] for o in outputs}) == 1 and len({o["built_by"] for o in outputs}) == 1
    assert sum(o["pid"] == o["built_by"] for o in outputs) == 1  # one built it, the others waited and read it
    assert len(entries(cache)) == 1 and not list(cache.glob("*.building*"))


@pytest.mark.parametrize("damage", ["truncate", "flip", "meta", "labels"])
def test_a_damaged_entry_is_rebuilt_not_trusted(tmp_path, damage, caplog):
    folder = write_digit_folder(tmp_path / "digits", classes=2, per_class=6, size=32)
    cache = tmp_path / "cache"
    entry = ensure(folder_config(folder), 32, cache)
    good = (entry.folder / PIXELS).read_bytes()
    if damage == "truncate":
        (entry.folder / PIXELS).write_bytes(good[: len(good) // 2])
    elif damage == "flip":
        (entry.folder / PIXELS).write_bytes(bytes([good[0] ^ 0xFF]) + good[1:])  # the first block is sampled
    elif damage == "meta":
        (entry.folder / META).write_text("{not json")
    else:
        np.save(entry.folder / LABELS, np.zeros(3, dtype=np.int64))
    with caplog.at_level(logging.WARNING, logger="trainer"):
        rebuilt = ensure(folder_config(folder), 32, cache)
    assert "damaged: rebuilding it" in caplog.text
    assert (rebuilt.folder / PIXELS).read_bytes() == good


def mount_tmpfs(path: Path, options: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.decode().strip()}")


@pytest.fixture
def mounts(tmp_path):
    made = []

    def make(options):
        path = tmp_path / f"mount-{uuid.uuid4().hex[:6]}"
        mount_tmpfs(path, options)
        made.append(path)
        return path

    yield make
    for path in made:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.mark.parametrize("kind", ["read_only", "full"])
def test_an_unusable_cache_dir_falls_back_with_one_warning(tmp_path, mounts, kind, caplog):
    cache = mounts("ro,size=1m" if kind == "read_only" else "size=64k")
    config = TrialConfig.from_dict(tiny_config(proxy_steps="1"))  # 300 digits at 64 px: 3.7 MB, far over 64 KB
    with caplog.at_level(logging.WARNING, logger="trainer"):
        result = run_trial(config, tmp_path / "t", cache_dir=cache)
    warnings = [r for r in caplog.records if "decoded-image cache unusable" in r.getMessage()]
    assert len(warnings) == 1 and result.metrics["test_accuracy"] is not None
    assert not [p for p in cache.iterdir() if ".building" in p.name]  # nothing half-written left behind


def test_rows_read_in_loader_workers_match(tmp_path):
    images = load_images(DatasetConfig(kind="digits", limit_per_class=20), 32, tmp_path / "cache")
    part = Part(images, np.arange(len(images)))
    alone = [x for x, _ in batches(part, 16, torch.Generator().manual_seed(1))]
    workers = [x for x, _ in batches(part, 16, torch.Generator().manual_seed(1), num_workers=2)]
    assert all(torch.equal(a, b) for a, b in zip(alone, workers, strict=True))


def test_identity_covers_what_a_torchvision_root_holds(tmp_path):
    (tmp_path / "cifar").mkdir()
    config = DatasetConfig(kind="cifar10", root=str(tmp_path / "cifar"))
    before = entry_key(identity(config, 32))
    (tmp_path / "cifar" / "data_batch_1").write_bytes(b"x")
    assert entry_key(identity(config, 32)) != before


def test_the_bundled_digits_keep_the_name_studies_bound_them_to():
    """The digits' source is read from the installed metadata (no scikit-learn import in the driver): the same text
    as scikit-learn's own version gives, so a study bound before sees no data change."""
    import sklearn

    from trainer.data.identity import digits_source

    assert digits_source() == f"scikit-learn {sklearn.__version__} load_digits"


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
