"""`python -m search` is the `search` command (an entry script: nothing imports it)."""

from cli import main

main()
