"""The one exception hierarchy of ``hpo``.

Every error a user can cause (a bad study file, a missing folder, an unreachable database)
is an :class:`HpoError`. Its message is one line that says what was received, what was
expected and how to fix it; the CLI prints it and exits with status 2.
"""

from __future__ import annotations

__all__ = [
    "HpoError",
    "ConfigError",
    "DataError",
    "ModelError",
    "StorageError",
    "StudyError",
]


class HpoError(Exception):
    """Base class of every error ``hpo`` raises on bad input."""


class ConfigError(HpoError):
    """A study file, or an override of one, is not valid."""


class DataError(HpoError):
    """The image data cannot be found, read or split."""


class ModelError(HpoError):
    """A model cannot be built as asked (unknown architecture, input too small, weights)."""


class StorageError(HpoError):
    """The study database cannot be reached or used."""


class StudyError(HpoError):
    """The study in the database does not match what was asked of it."""
