"""``python -m mm`` runs the command line."""

from mm.cli import main

main()
