"""spacefile: hostile inputs and the defects the review rounds found, each checked where it belongs."""

import os
import time
from pathlib import Path

from tests.search.helpers import refused, search_cli


def test_files_that_are_not_short_yaml_text_are_refused_without_reading_them_whole(tmp_path):
    """Items 14 and 17: a 50 MB space took 253 s and 2.6 GB; /dev/zero reached 8.7 GB; a FIFO blocked forever;
    non-UTF-8 and UTF-16 files were UnicodeDecodeError tracebacks."""
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * (2 << 20))
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("study: caf\xe9\n".encode("latin-1"))
    utf16 = tmp_path / "utf16.yaml"
    utf16.write_bytes("study: x\n".encode("utf-16"))
    for path, message in (
        (big, "is larger than 1 MB"),
        (Path("/dev/zero"), "is not a regular file"),
        (fifo, "is not a regular file"),
        (tmp_path, "is a folder"),
        (latin, "is not UTF-8 text (line 1"),
        (utf16, "is UTF-16 text; save it as UTF-8"),
    ):
        refused(search_cli("run", str(path), "--dry-run", cwd=tmp_path, timeout=60), message)


def test_an_alias_bomb_is_refused_at_once_with_a_short_message(tmp_path):
    """Item 13: a 9-level alias bomb ran 120 s to 1.7 GB; at 7 levels the message was 25 MB."""
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    for depth in (7, 9):
        path = tmp_path / f"bomb{depth}.yaml"
        path.write_text("\n".join(levels[:depth]) + "\n")
        started = time.monotonic()
        done = search_cli("run", str(path), "--dry-run", cwd=tmp_path, timeout=60)
        assert time.monotonic() - started < 30
        refused(done, "expands to more than 100,000 values")
        assert len(done.stderr) < 400
