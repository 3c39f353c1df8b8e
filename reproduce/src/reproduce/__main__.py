"""``python -m reproduce`` = the ``reproduce`` command."""

from reproduce.cli import main

main()
