"""Bad input beyond the 40 malformed spaces of tests/search/space/bad_spaces/: dataset folders and trial configs. Each
is refused with exit 2, its message, no traceback, nothing written; folders that are merely messy still train."""

import json
import os
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from cli import app
from tests.conftest import write_digit_folder
from tests.search.helpers import SEARCH, folder_space, refused

FIXED = {"image_size": 64, "architecture": "test_resnet", "proxy_steps": "1,p,1"}


def search(*args, cwd):
    """The CLI in this process (typer's runner), in folder `cwd`: returncode and stderr/stdout like a process."""
    previous = os.getcwd()
    os.chdir(cwd)
    try:
        result = CliRunner().invoke(app, list(args))
    finally:
        os.chdir(previous)
    return SimpleNamespace(returncode=result.exit_code, stderr=result.output, stdout=result.stdout)


def make_folder(root, case):
    """A dataset folder broken in one way."""
    if case == "root_is_a_file":
        root.write_text("not a folder")
        return root
    if case == "no_class_folders":
        root.mkdir()
        Image.new("RGB", (32, 32)).save(root / "loose.png")
        return root
    write_digit_folder(root, classes=3, per_class=6)
    if case == "single_class":
        for name in ("1", "2"):
            for f in (root / name).iterdir():
                f.unlink()
    elif case == "empty_class_folders_only":
        for name in ("0", "1", "2"):
            for f in (root / name).iterdir():
                f.unlink()
    elif case == "class_too_small_for_test":
        for f in sorted((root / "2").iterdir())[2:]:
            f.unlink()
    elif case == "only_non_images":
        for name in ("1", "2"):
            for f in (root / name).iterdir():
                f.rename(f.with_suffix(".txt"))
    return root


FOLDER_CASES = {
    "root_is_a_file": "is not a folder",
    "no_class_folders": "needs at least 2 class folders with images, found 0",
    "single_class": "needs at least 2 class folders with images, found 1 (empty: 1, 2)",
    "empty_class_folders_only": "found 0 (empty: 0, 1, 2)",
    "class_too_small_for_test": "class '2'",
    "only_non_images": "found 1",
}


@pytest.mark.parametrize("case", list(FOLDER_CASES))
def test_bad_dataset_folder_refused_by_search_run(tmp_path, case):
    folder = make_folder(tmp_path / "data", case)
    space = tmp_path / "space.yaml"
    space.write_text(
        yaml.safe_dump(
            {
                "study": "bad",
                "datasets": {"d": {"kind": "imagefolder", "root": str(folder)}},
                "fixed": FIXED,
                "grid": {"threshold": [0.5]},
            }
        )
    )
    work = tmp_path / "work"
    work.mkdir()
    done = search("run", str(space), "--executor", "local", cwd=work)
    assert done.returncode == 2 and FOLDER_CASES[case] in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and list(work.iterdir()) == []


@pytest.mark.parametrize("case", ["single_class", "class_too_small_for_test", "root_is_a_file"])
def test_bad_dataset_folder_refused_by_search_trial(tmp_path, case):
    folder = make_folder(tmp_path / "data", case)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"dataset": {"kind": "imagefolder", "root": str(folder)}, **FIXED}))
    done = search("trial", str(config), "--out", str(tmp_path / "trial"), cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "DataError" in done.stderr or "FolderError" in done.stderr, done.stderr  # FolderError is a DataError
    assert not (tmp_path / "trial").exists()  # nothing half-written


TRIAL_CONFIGS = {
    "not_json": ("{dataset: digits", "cannot read JSON"),
    "not_a_mapping": ("[1, 2]", "expected a mapping"),
    "missing_dataset": ('{"image_size": 64}', "dataset: required field is missing"),
    "unknown_field": ('{"dataset": {"kind": "digits"}, "epochs": 3}', "epochs: unknown field"),
    "wrong_type": ('{"dataset": {"kind": "digits"}, "image_size": "64"}', "image_size: expected an integer"),
    "bad_kind": ('{"dataset": {"kind": "mnist"}}', "dataset.kind: expected one of"),
    "bad_schedule": ('{"dataset": {"kind": "digits"}, "proxy_steps": "3,p"}', "every 'p' must be followed"),
    "bad_replacement": ('{"dataset": {"kind": "digits"}, "pixel_replacement": "blur"}', "pixel_replacement"),
    "unknown_architecture": ('{"dataset": {"kind": "digits"}, "architecture": "resnet1000"}', "unknown architecture"),
    "missing_weights": (
        '{"dataset": {"kind": "digits"}, "architecture": "test_resnet", "pretrained_path": "/nonexistent/w.pt"}',
        "does not exist",
    ),
}


@pytest.mark.parametrize("case", list(TRIAL_CONFIGS))
def test_bad_trial_config(tmp_path, case):
    text, message = TRIAL_CONFIGS[case]
    (tmp_path / "config.json").write_text(text)
    done = search("trial", str(tmp_path / "config.json"), "--out", str(tmp_path / "trial"), cwd=tmp_path)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert not (tmp_path / "trial").exists()


def test_messy_folder_still_trains_and_counts_what_it_skipped(tmp_path):
    folder = write_digit_folder(tmp_path / "data", classes=3, per_class=8)
    (folder / "0" / "zero.png").write_bytes(b"")  # 0-byte image
    (folder / "1" / "readme.txt").write_text("not an image")  # non-image file
    (folder / "2" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")  # corrupt JPEG
    (folder / "empty_class").mkdir()  # empty class folder: ignored
    Image.fromarray(np.full((3000, 4000, 3), 200, np.uint8)).save(folder / "0" / "huge.png")  # 12 Mpx
    for mode in ("RGBA", "P", "CMYK", "I;16", "1"):  # mixed modes
        suffix = "jpg" if mode == "CMYK" else "png"
        Image.new(mode, (20, 30)).save(folder / "1" / f"mode_{mode.replace(';', '')}.{suffix}")
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(
            {
                "dataset": {"kind": "imagefolder", "root": str(folder)},
                **FIXED,
                "batch_size": 8,
                "split": {"val": 0.25, "test": 0.25},
            }
        )
    )
    done = search("trial", str(config), "--out", str(tmp_path / "trial"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    metrics = json.loads(done.stdout[done.stdout.index("{") :])
    assert metrics["skipped_files"] == 3
    split = json.loads((tmp_path / "trial" / "split.json").read_text())
    assert len(split["train"]) + len(split["val"]) + len(split["test"]) == 3 * 8 + 1 + 5
    assert split["classes"] == ["0", "1", "2"]


DROP_DAC = ["setpriv", "--inh-caps=-dac_override,-dac_read_search", "--bounding-set=-dac_override,-dac_read_search"]


def unprivileged(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """`args` held to files' modes (as root: without the capabilities that override them)."""
    prefix = DROP_DAC if os.geteuid() == 0 else []
    return subprocess.run([*prefix, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("what", ["folder", "file"])
def test_an_unreadable_class_folder_or_file_refuses_the_run_and_creates_nothing(tmp_path, what):
    """Items 6 and 7: `chmod 000` on a class folder dropped the class silently (exit 0, 2 classes, `skipped_files 0`,
    a dry-run showing "0–8 images per class"), and an unreadable file refused the first run with exit 2 but left an
    empty study in the database."""
    path = folder_space(tmp_path)
    target = tmp_path / "imgs" / "1" if what == "folder" else tmp_path / "imgs" / "1" / "4.png"
    target.chmod(0)
    try:
        for extra in ((), ("--dry-run",)):
            done = unprivileged([*SEARCH, "run", str(path), "--executor", "local", *extra], tmp_path)
            refused(done, f"cannot read {target} (Permission denied")
        assert not (tmp_path / "runs").exists()
    finally:
        target.chmod(0o755)
