"""``python -m newsletter`` runs the CLI."""

from .cli import main

main()
