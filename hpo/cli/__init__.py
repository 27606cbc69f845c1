"""The ``hpo`` command line (Typer lives here only): parse, call one library function,
print."""

from hpo.cli._app import app, main

__all__ = [
    "app",
    "main",
]
