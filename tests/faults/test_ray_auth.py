"""Hostile pass, item 11: every Ray this tool starts or joins requires Ray's token, since its servers listen on every
interface (Ray 2.60 has no setting to keep them on loopback): a client without the token is refused, a worker
without one never starts, and the token file is its owner's alone. Item 12: nothing a user types breaks a line of
the Slurm script."""

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from cli.cluster import slurm_script
from search.run.rayauth import protect_token_file, require_token
from tests.search.helpers import python_process, search_cli

CLIENT = (
    "import logging, ray\n"
    "try:\n"
    "    ray.init(address={address!r}, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)\n"
    "    print('CONNECTED', len(ray.nodes()))\n"
    "except Exception as exc:\n"
    "    print('REFUSED', type(exc).__name__)\n"
)


def connect(address: str, env: dict) -> str:
    done = subprocess.run(
        [sys.executable, "-c", CLIENT.format(address=address)], env=env, capture_output=True, text=True, timeout=120
    )
    return done.stdout.strip().splitlines()[-1]


DRIVER = (
    "import os, time\n"
    "os.environ.pop('RAY_AUTH_MODE', None)  # what a user's shell has: the executor turns the token on itself\n"
    "from search.run.dispatch import RayExecutor\n"
    "from search.run.worker import Settings\n"
    "executor = RayExecutor(None, 1, 0, None, Settings({store!r}, None))\n"
    "import ray\n"
    "print(ray.get_runtime_context().gcs_address, os.environ['RAY_AUTH_MODE'], flush=True)\n"
    "time.sleep(300)\n"
)


@pytest.mark.slow
def test_a_local_run_s_ray_refuses_a_client_without_its_token(tmp_path):
    driver = python_process(DRIVER.format(store=str(tmp_path / "store")))
    try:
        address, mode = driver.stdout.readline().split()
        assert mode == "token"
        stranger = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
        assert connect(address, {**stranger, "RAY_AUTH_MODE": "disabled"}).startswith("REFUSED")
        wrong = {**stranger, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 64}
        assert connect(address, wrong).startswith("REFUSED")
        assert connect(address, dict(os.environ)) == "CONNECTED 1"  # the holder of the token gets in
    finally:
        os.killpg(driver.pid, signal.SIGTERM)
        driver.wait(timeout=60)


def test_turning_the_token_off_is_explicit_and_warned(monkeypatch, capsys):
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    assert require_token() == "disabled"
    assert "anyone who can reach this machine's Ray ports can run code" in capsys.readouterr().err
    monkeypatch.delenv("RAY_AUTH_MODE")
    assert require_token() == "token" and os.environ["RAY_AUTH_MODE"] == "token"


def test_the_token_file_is_made_its_owner_s_alone(tmp_path, monkeypatch):
    token = tmp_path / "auth_token"
    token.write_text("a" * 64)
    token.chmod(0o644)  # as Ray writes it
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token))
    protect_token_file()
    assert stat.S_IMODE(token.stat().st_mode) == 0o600


def test_a_cluster_head_makes_a_token_and_a_worker_without_one_is_refused(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    env["HOME"] = str(tmp_path)
    worker = search_cli("cluster", "worker", "127.0.0.1:1", cwd=tmp_path, timeout=120, env=env)
    assert worker.returncode == 2 and "no Ray token on this machine" in worker.stderr, worker.stderr
    assert "Traceback" not in worker.stderr
    # The head's token step (the head itself is started by the cluster tests): made, private, and then found.
    made = subprocess.run(
        [
            sys.executable,
            "-c",
            "from cli.cluster import _ray; from search.run.rayauth import require_token, token_source\n"
            "print(require_token(_ray()), token_source())",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    token = tmp_path / ".ray" / "auth_token"
    assert made.stdout.split() == ["token", str(token)], made.stderr
    assert stat.S_IMODE(token.stat().st_mode) == 0o600 and len(token.read_text().strip()) >= 32


@pytest.mark.parametrize(
    ("flag", "value"), [("partition", "gpu\ntouch x"), ("time_limit", "1:00\ntouch x"), ("partition", "a;b")]
)
def test_the_slurm_script_refuses_values_that_would_add_a_command(flag, value):
    args = {"partition": None, "time_limit": None, flag: value}
    with pytest.raises(ValueError, match="is not a Slurm"):
        slurm_script(Path("s.yaml"), 2, 1, 8, args["partition"], args["time_limit"], 6379, None)


def test_no_user_value_adds_a_line_to_the_slurm_script():
    for space, artifacts in ((Path("my space\ntouch x.yaml"), None), (Path("s.yaml"), "s3://bucket/x\ntouch y")):
        with pytest.raises(ValueError, match="control character"):
            slurm_script(space, 2, 1, 8, None, None, 6379, artifacts)
    script = slurm_script(Path("my space;$(touch x).yaml"), 2, 1, 8, "gpu,long", "1-12:00:00", 6379, "a b;c")
    lines = script.splitlines()
    assert "#SBATCH --job-name=search-my_space___touch_x_" in lines
    assert "'my space;$(touch x).yaml'" in script and "'a b;c'" in script  # quoted: one argument each
    done = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
