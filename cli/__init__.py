"""The `search` command (`cli.app`), above everything it drives: `search/` runs studies, `results/` reads them,
and neither imports this package. Importing it registers every command."""

from cli import inspection, run, trial
from cli.app import app, main

__all__ = ["app", "inspection", "main", "run", "trial"]
