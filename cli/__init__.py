"""The `search` command (`cli.app`), above everything it drives: `search/` runs studies, `results/` reads them,
and neither imports this package. Importing it registers every command."""

from cli import inspection, run  # isort: skip (the order --help lists the commands in)
from cli import confirm, trial  # isort: skip
from cli.app import app, main

__all__ = ["app", "confirm", "inspection", "main", "run", "trial"]
