"""Names that become paths (a study's, a dataset's): the one rule, checked before a name becomes a file or a
folder."""

from __future__ import annotations

import re

STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")
MAX_LENGTH = 100  # a name becomes `<name>.db` and a folder: file systems stop at 255 bytes


def study_name_problem(name: object, what: str = "study") -> str | None:
    """Why `name` cannot be a study name (or, with `what`, a dataset's name: it names files in the artifact store
    too), or None when it can."""
    if isinstance(name, str) and len(name) > MAX_LENGTH:
        return f"a {what} name has at most {MAX_LENGTH} characters, this one {len(name)} ({name[:20]}…)"
    if isinstance(name, str) and STUDY_NAME.match(name):
        return None
    shown = repr(name) if len(repr(name)) <= 60 else repr(name)[:59] + "…"
    return f"{shown} is not a valid {what} name (letters, digits, '_', '.', '-'; starting with a letter or digit)"
