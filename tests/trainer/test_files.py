"""Crash-safe writes (`trainer.files`)."""

import os
import stat

import pytest

from trainer.files import atomic_write_bytes


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_honour_the_umask(tmp_path, umask, mode):
    """Every output (report.html, tables, trials.csv, config.json, result.json, checkpoint.pt) is written through
    `atomic_file`: its mode was mkstemp's 0600 whatever the umask, so a co-supervisor could read none of them."""
    old = os.umask(umask)
    try:
        atomic_write_bytes(tmp_path / "out.txt", b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out.txt").stat().st_mode) == mode
