"""The one place hpo reaches into Optuna's private API, and why.

Optuna's public ``Study`` has no accessor for its storage or id, and a ``Trial`` none for
its storage id, yet hpo must call storage methods directly: to take a grid point under the
study lock, to record heartbeats around ask-and-tell, to fail a lost trial and re-queue it,
to keep the result of a trial failed under its feet. ``Study.optimize`` does the same inside
Optuna (``optuna/study/_optimize.py``). Each accessor below is one line, so an Optuna
release that renames one breaks exactly one place (and the tests say which).
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.storages._cached_storage import _CachedStorage

__all__ = ["storage_of", "trial_id", "study_id", "unwrap_storage", "journal_file"]


def storage_of(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The storage ``study`` reads and writes (Optuna's ``Study._storage``)."""
    return study._storage


def trial_id(trial: optuna.Trial | optuna.trial.FrozenTrial) -> int:
    """The storage id of ``trial`` (not its number): what storage methods take."""
    return trial._trial_id


def study_id(study: optuna.Study) -> int:
    """The storage id of ``study`` (the dashboard's URLs use it)."""
    return study._study_id


def unwrap_storage(storage: Any) -> Any:
    """The RDB storage under the ``_CachedStorage`` an ``optuna.Study`` wraps it in."""
    return storage._backend if isinstance(storage, _CachedStorage) else storage


def journal_file(storage: Any) -> str | None:
    """The log file of a JournalStorage over a file backend, else None."""
    return getattr(getattr(storage, "_backend", None), "_file_path", None)
