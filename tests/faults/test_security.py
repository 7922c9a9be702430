"""Security: safe YAML, tensors-only checkpoints, no shell, no pickled configs, names never become paths, and the
dashboard on loopback unless asked otherwise."""

import os
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
# bandit's rules in ruff: unsafe YAML (S506), pickle (S301), shell (S602, S604, S605), exec/eval (S102, S307),
# binding every interface (S104); and the project's own ban on torch.load outside the one loader that passes
# weights_only=True (TID251). The same rules run in CI's lint step; here they guard the product's own code.
SECURITY_RULES = "S102,S104,S301,S307,S506,S602,S604,S605,TID251"


def test_source_passes_the_security_rules():
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "ruff",
            "check",
            "--no-cache",
            "--select",
            SECURITY_RULES,
            "trainer",
            "search",
            "results",
            "bench",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout


def test_the_security_rules_catch_what_they_must(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import pickle, subprocess, torch, yaml\nyaml.load(open('x'))\npickle.loads(b'')\n"
        "subprocess.run('ls', shell=True)\ntorch.load('c.pt')\n"
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "ruff",
            "check",
            "--no-cache",
            "--config",
            str(ROOT / "pyproject.toml"),
            "--select",
            SECURITY_RULES,
            str(bad),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    for rule in ("S506", "S301", "S602", "TID251"):
        assert rule in done.stdout, (rule, done.stdout)


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
    for args in (
        ["status", "--study", "../../etc/passwd"],
        ["export", "--study", "../x"],
        ["report", "--study", "a/b"],
        ["resume", "--study", "..", "--executor", "local"],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "search", *args], capture_output=True, text=True, cwd=tmp_path, timeout=120
        )
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
    default = subprocess.Popen(
        [sys.executable, "-m", "search", "dashboard", "--storage", storage, "--port", str(free_port())],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert listening_addresses(default.pid) == {"127.0.0.1"}
    finally:
        default.terminate()
        _, err = default.communicate(timeout=30)
    assert "warning" not in err
    exposed = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "search",
            "dashboard",
            "--storage",
            storage,
            "--host",
            "0.0.0.0",
            "--port",
            str(free_port()),
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert listening_addresses(exposed.pid) == {"0.0.0.0"}
    finally:
        exposed.terminate()
        _, err = exposed.communicate(timeout=30)
    assert "reachable from other machines" in err
