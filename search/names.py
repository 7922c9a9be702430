"""Study names: the one rule, checked before a name becomes a path or a database file."""

from __future__ import annotations

import re

STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")


def study_name_problem(name: object) -> str | None:
    """Why `name` cannot be a study name, or None when it can."""
    if isinstance(name, str) and STUDY_NAME.match(name):
        return None
    return f"{name!r} is not a valid study name (letters, digits, '_', '.', '-'; starting with a letter or digit)"
