"""Helpers of the fault suite (the `local_ray` fixture is in tests/conftest.py)."""

import os

from rich.console import Console

from search.driver import RunOptions, run_study


def run_in_process(spec, tmp_path, executor="ray", out=None, cache_dir=None):
    """`search run` in this process (the decoded-image cache in `cache_dir`, none by default); returns (exit code,
    options)."""
    options = RunOptions(
        f"sqlite:///{tmp_path}/study.db",
        out or tmp_path / "out",
        executor,
        cache_dir=None if cache_dir is None else str(cache_dir),
    )
    return run_study(spec, options, Console(file=open(os.devnull, "w"))), options
