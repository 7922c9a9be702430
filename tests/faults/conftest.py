"""Fixtures of the fault suite: a local Ray for in-process runs."""

import os

import pytest
import ray
from rich.console import Console

from search.driver import RunOptions, run_study


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 2**20, log_to_driver=False)
    yield
    ray.shutdown()


def run_in_process(spec, tmp_path, executor="ray", out=None):
    """`search run` in this process; returns (exit code, options)."""
    options = RunOptions(f"sqlite:///{tmp_path}/study.db", out or tmp_path / "out", executor)
    return run_study(spec, options, Console(file=open(os.devnull, "w"))), options
