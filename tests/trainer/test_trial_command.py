"""`search trial CONFIG.json --out DIR`, as a new user runs it: a real subprocess on an image folder."""

import json
import subprocess
import sys

import pytest


def search(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "search", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.mark.slow
def test_trial_on_an_image_folder_writes_every_file_of_design_5(tmp_path, digit_folder):
    config = {
        "dataset": {"kind": "imagefolder", "root": str(digit_folder)},
        "image_size": 64,
        "batch_size": 8,
        "architecture": "test_resnet",
        "cam_method": "gradcamplusplus",
        "threshold": 0.4,
        "proxy_steps": "1,p,1",
        "split": {"val": 0.25, "test": 0.25},
        "pretrained": False,
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    out = tmp_path / "trial"
    done = search("trial", str(path), "--out", str(out))
    assert done.returncode == 0, done.stderr
    metrics = json.loads(done.stdout)
    assert 0 <= metrics["test_accuracy"] <= 1 and metrics["epochs"] == 2
    for name in (
        "config.json",
        "split.json",
        "metrics.jsonl",
        "checkpoint.pt",
        "proxies/step-0.npz",
        "cams.png",
        "result.json",
        "trial.log",
    ):
        assert (out / name).is_file(), name
    assert any((out / "tensorboard").iterdir())
    assert json.loads((out / "config.json").read_text())["dataset"]["root"] == str(digit_folder)


@pytest.mark.slow
def test_bad_config_is_one_line_and_exit_2_before_torch_is_loaded(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"dataset": {"kind": "digits"}, "threshold": 3}))
    done = subprocess.run(  # -X importtime: every module the command imported, on stderr
        [sys.executable, "-X", "importtime", "-m", "search", "trial", str(path), "--out", str(tmp_path / "t")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time")}
    errors = [line for line in done.stderr.splitlines() if not line.startswith("import time")]
    assert done.returncode == 2 and len(errors) == 1 and "threshold: expected a number in [0, 1]" in errors[0]
    assert not (tmp_path / "t").exists()
    assert "search.space.design" in imported and not {"torch", "timm", "pandas"} & imported  # refused in a second
