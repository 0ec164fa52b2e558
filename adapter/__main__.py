"""``python -m adapter`` runs the CLI."""

from adapter.cli import main

main()
