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
from tests.search.helpers import python_process, refused, search_cli, write_space

CLIENT = (
    "import logging, ray\n"
    "try:\n"
    "    ray.init(address={address!r}, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)\n"
    "    print('CONNECTED', len(ray.nodes()))\n"
    "except Exception as exc:\n"
    "    print('REFUSED', type(exc).__name__)\n"
)


def connect(address: str, envs: list[dict]) -> list[str]:
    """What a client in each environment of `envs` says on joining `address`; the clients try together (one after
    another this test took 51 s, together 29 s)."""
    clients = [
        subprocess.Popen(
            [sys.executable, "-c", CLIENT.format(address=address)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for env in envs
    ]
    return [client.communicate(timeout=120)[0].strip().splitlines()[-1] for client in clients]


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
        wrong = {**stranger, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 64}
        no_token, wrong_token, the_token = connect(
            address, [{**stranger, "RAY_AUTH_MODE": "disabled"}, wrong, dict(os.environ)]
        )
        assert no_token.startswith("REFUSED") and wrong_token.startswith("REFUSED")
        assert the_token == "CONNECTED 1"  # the holder of the token gets in
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


def test_the_slurm_script_honours_the_umask(tmp_path):
    """Item 12: under `umask 077` the script was written 0755."""
    (tmp_path / "s.yaml").write_text("study: s\n")
    done = subprocess.run(
        ["bash", "-c", f"umask 077 && {sys.executable} -m search cluster slurm s.yaml --nodes 1 --gpus-per-node 1"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "s.sbatch").stat().st_mode & 0o777 == 0o700


@pytest.mark.slow
def test_every_refused_join_of_a_ray_cluster_is_one_line(tmp_path, gpu_head):
    """Item 8: `search run --ray-address` without a token was a 56-line AuthenticationError traceback, with a wrong
    one ~20 lines of Ray warnings and "cannot write or read Failed to connect"; `search cluster worker` with
    `RAY_AUTH_TOKEN_PATH=/nonexistent` passed the token check (the head even printed "token from /nonexistent"), and
    a refused worker was a 64-line traceback."""
    path = write_space(tmp_path / "s.yaml")
    home = tmp_path / "home"  # a machine without the head's token
    home.mkdir()
    bare = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")} | {"HOME": str(home)}
    wrong = bare | {"RAY_AUTH_TOKEN": "0" * 64}
    missing = bare | {"RAY_AUTH_TOKEN_PATH": "/nonexistent"}
    cases = [
        (["run", str(path), "--ray-address", gpu_head], bare, "no Ray token on this machine to join"),
        (["run", str(path), "--ray-address", gpu_head], wrong, f"the Ray at {gpu_head} refused this machine's token"),
        (["run", str(path), "--ray-address", gpu_head], missing, "RAY_AUTH_TOKEN_PATH names /nonexistent, which is"),
        (["run", str(path), "--ray-address", "127.0.0.1:1"], dict(os.environ), "nothing answers at 127.0.0.1:1"),
        (["run", str(path), "--ray-address", "no-port"], dict(os.environ), "expected HOST:PORT"),
        (["cluster", "worker", gpu_head, "--num-cpus", "1"], missing, "RAY_AUTH_TOKEN_PATH names /nonexistent"),
        (["cluster", "worker", gpu_head, "--num-cpus", "1"], wrong, "refused this machine's token"),
        (["cluster", "head", "--port", "1"], missing, "RAY_AUTH_TOKEN_PATH names /nonexistent"),
    ]
    for args, env, message in cases:
        refused(search_cli(*args, cwd=tmp_path, env=env, timeout=120), message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "s.yaml"]
