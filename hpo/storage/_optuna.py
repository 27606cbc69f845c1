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


def write_trial_user_attrs(storage: optuna.storages.RDBStorage, trial_id: int,
                           attrs: dict[str, Any]) -> None:
    """Sets several user attributes of a trial in one transaction (one commit, not one per
    attribute): RDBStorage's own per-attribute upsert, in one session."""
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    with _create_scoped_session(storage.scoped_session, True) as session:
        for key, value in attrs.items():
            storage._set_trial_attr_without_commit(
                session, models.TrialUserAttributeModel, trial_id, key, value)


def set_user_attrs(storage: optuna.storages.BaseStorage, trial_id: int,
                   attrs: dict[str, Any]) -> None:
    """Sets user attributes of a RUNNING trial: in one transaction on hpo's RDB storage,
    one call each on any other storage.

    Raises:
        optuna.exceptions.UpdateFinishedTrialError: The trial is finished (another worker
            failed it as stale); nothing was written.
    """
    backend = unwrap_storage(storage)
    batched = getattr(backend, "set_trial_user_attrs", None)
    if batched is not None:
        batched(trial_id, attrs)
        return
    for key, value in attrs.items():
        storage.set_trial_user_attr(trial_id, key, value)
