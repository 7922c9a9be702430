"""Shared fixtures: small real data (scikit-learn's digits, written as PNG folders when a folder is needed)."""

from __future__ import annotations

import os

# One thread for OpenMP and OpenBLAS in every test process and what it starts, set before numpy loads them: two
# pytest workers on two cores, each with a pool of two spinning threads, spent 40 % more CPU on the statistics
# tests (104 -> 64 s for tests/analysis and the claims and tables tests). A trial still sets its own torch threads.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import secrets
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.tiny import TIMING, tiny_config  # noqa: F401 (the trial config the tests import from here)

# Ray with token authentication, as the product runs it; one token for the session, never the user's own.
os.environ["RAY_AUTH_MODE"] = "token"
os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
# Caches (decoded images, model checks) in a folder of this test session, never the user's: subprocesses inherit it.
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="pas-test-cache-")
RAY_ARGS = {
    "address": "local",
    "num_cpus": 2,
    "num_gpus": 2,  # declared, none present: the GPU dispatch runs as on a GPU machine (tests/search/run/test_gpu.py)
    "include_dashboard": False,
    "object_store_memory": 100 * 2**20,
    "log_to_driver": False,
}


@pytest.fixture
def short_dir():
    """A folder with a short path: Ray's session folder holds Unix sockets, whose paths may not pass 107 bytes."""
    import shutil

    folder = Path(tempfile.mkdtemp(prefix="pas-", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def local_ray():
    """A real local Ray with 2 CPUs, told that this machine has 2 GPUs (it has none): Ray schedules GPU tasks and
    sets CUDA_VISIBLE_DEVICES as on a GPU machine, the trials fall back to the CPU. Started once per test process
    (a start costs ~5 s) and kept for the next test that asks; an in-process run without this fixture starts and
    stops its own, and one that must not find it uses `no_ray`."""
    import ray

    if not ray.is_initialized():
        ray.init(**RAY_ARGS)  # Ray stops it when the process ends
    yield


@pytest.fixture
def no_ray():
    """No Ray in this process: for a test that joins a cluster of its own (a run uses a Ray it finds initialised)."""
    import ray

    ray.shutdown()
    yield


def without_timing(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in TIMING}


def write_digit_folder(root: Path, classes: int = 3, per_class: int = 12, size: int = 32) -> Path:
    """An image folder `root/<digit>/<i>.png` of real digit images."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    for c in range(classes):
        (root / str(c)).mkdir(parents=True, exist_ok=True)
        images = digits.images[digits.target == c][:per_class]
        for i, img in enumerate(images):
            pixels = (img * 255 / 16).astype(np.uint8)
            Image.fromarray(pixels).resize((size, size)).save(root / str(c) / f"{i}.png")
    return root


@pytest.fixture
def digit_folder(tmp_path: Path) -> Path:
    return write_digit_folder(tmp_path / "digits_folder")


@pytest.fixture
def gpu_head(tmp_path, short_dir):
    """`search cluster head --num-gpus 2` in its own process group, as a user starts one."""
    from tests.search.helpers import free_port, search_cli

    port = free_port()
    head = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "search",
            "cluster",
            "head",
            "--port",
            str(port),
            "--num-cpus",
            "2",
            "--num-gpus",
            "2",
            "--block",
            "--temp-dir",
            str(short_dir),
            "--node-ip-address",
            "127.0.0.1",
        ],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    address = f"127.0.0.1:{port}"
    assert search_cli("cluster", "wait", address, "--timeout", "120", cwd=tmp_path).returncode == 0
    yield address
    os.killpg(head.pid, 9)
    head.wait(timeout=60)
