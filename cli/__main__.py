"""`python -m cli` is the `search` command."""

from cli import main

main()
