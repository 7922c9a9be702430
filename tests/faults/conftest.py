"""Helpers of the fault suite (the `local_ray` fixture is in tests/conftest.py)."""

import os

from rich.console import Console

from search.planning.options import RunFlags, resolve
from search.run.driver import run_study


def run_in_process(spec, tmp_path, executor="ray", out=None, cache_dir=None):
    """`search run` in this process (the decoded-image cache in `cache_dir`, none by default); returns (exit code,
    options)."""
    flags = RunFlags(
        f"sqlite:///{tmp_path}/study.db",
        out or tmp_path / "out",
        executor=executor,
        cache_dir=cache_dir,
        no_cache=cache_dir is None,
    )
    options = resolve(spec, flags)
    return run_study(spec, options, Console(file=open(os.devnull, "w"))), options
