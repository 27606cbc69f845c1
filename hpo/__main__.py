"""``python -m hpo`` runs the CLI."""

from hpo.cli._app import main

main()
