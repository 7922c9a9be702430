"""Security: safe YAML, tensors-only checkpoints, no shell, no pickled configs, names never become paths, and the
dashboard on loopback unless asked otherwise."""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import psutil
import torch

from tests.conftest import tiny_config
from tests.search.helpers import free_port
from trainer import TrialConfig, run_trial

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [p for d in ("trainer", "search", "results", "bench") for p in (ROOT / d).rglob("*.py")]


def test_source_uses_safe_loaders_and_no_shell():
    assert SOURCES
    for path in SOURCES:
        text = path.read_text()
        assert not re.search(r"yaml\.(load|unsafe_load|full_load)\(", text), path
        assert "shell=True" not in text and "os.system(" not in text, path
        assert "import pickle" not in text and "pickle." not in text, path
        for call in re.findall(r"torch\.load\([^)]*\)", text):
            assert "weights_only=True" in call, (path, call)


class Exploit:
    def __reduce__(self):
        return (os.system, ("touch /tmp/pwned-by-checkpoint",))


def test_a_checkpoint_with_code_in_it_is_never_run(tmp_path):
    marker = Path("/tmp/pwned-by-checkpoint")
    marker.unlink(missing_ok=True)
    config = TrialConfig.from_dict(tiny_config(proxy_steps="1"))
    (tmp_path / "t").mkdir()
    torch.save({"config_digest": config.digest(), "payload": Exploit()}, tmp_path / "t" / "checkpoint.pt")
    run_trial(config, tmp_path / "t")
    assert not marker.exists()
    assert "checkpoint.pt unusable" in (tmp_path / "t" / "trial.log").read_text()


def test_study_names_never_become_paths(tmp_path):
    for args in (["status", "--study", "../../etc/passwd"], ["export", "--study", "../x"],
                 ["report", "--study", "a/b"], ["resume", "--study", "..", "--executor", "local"]):
        done = subprocess.run([sys.executable, "-m", "search", *args], capture_output=True, text=True, cwd=tmp_path,
                              timeout=120)
        assert done.returncode == 2 and "is not a valid study name" in done.stderr, (args, done.stderr)
    assert list(tmp_path.iterdir()) == []


def listening_addresses(pid, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        addresses = {c.laddr.ip for c in psutil.Process(pid).net_connections() if c.status == psutil.CONN_LISTEN}
        if addresses:
            return addresses
        time.sleep(0.3)
    raise AssertionError("the dashboard never listened")


def test_dashboard_binds_loopback_unless_told(tmp_path):
    import optuna

    storage = f"sqlite:///{tmp_path}/s.db"
    optuna.create_study(study_name="s", storage=storage)
    default = subprocess.Popen([sys.executable, "-m", "search", "dashboard", "--storage", storage, "--port",
                                str(free_port())], stderr=subprocess.PIPE, text=True)
    try:
        assert listening_addresses(default.pid) == {"127.0.0.1"}
    finally:
        default.terminate()
        _, err = default.communicate(timeout=30)
    assert "warning" not in err
    exposed = subprocess.Popen([sys.executable, "-m", "search", "dashboard", "--storage", storage, "--host",
                                "0.0.0.0", "--port", str(free_port())], stderr=subprocess.PIPE, text=True)
    try:
        assert listening_addresses(exposed.pid) == {"0.0.0.0"}
    finally:
        exposed.terminate()
        _, err = exposed.communicate(timeout=30)
    assert "reachable from other machines" in err
