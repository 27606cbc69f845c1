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


def claim_waiting_trial(storage: optuna.storages.RDBStorage, trial_id: int, key: str,
                        token: str) -> bool:
    """RDBStorage's WAITING -> RUNNING transition of ``set_trial_state_values`` with a
    system attribute ``key`` = ``token`` written in the same transaction, so that a worker
    whose answer was lost can tell its own claim from another worker's. False when the
    trial is no longer WAITING."""
    from datetime import datetime

    import sqlalchemy.exc
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session
    from optuna.trial import TrialState

    try:
        with _create_scoped_session(storage.scoped_session) as session:
            trial = models.TrialModel.find_or_raise_by_id(trial_id, session, for_update=True)
            storage.check_trial_is_updatable(trial_id, trial.state)
            if trial.state != TrialState.WAITING:
                return False
            trial.state = TrialState.RUNNING
            trial.datetime_start = datetime.now()
            storage._set_trial_attr_without_commit(
                session, models.TrialSystemAttributeModel, trial_id, key, token)
    except sqlalchemy.exc.IntegrityError:
        return False
    return True


def delete_trial_system_attr(storage: optuna.storages.RDBStorage, trial_id: int,
                             key: str) -> None:
    """Deletes one system attribute of a trial, finished or not (idempotent)."""
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    with _create_scoped_session(storage.scoped_session, True) as session:
        session.query(models.TrialSystemAttributeModel).filter(
            models.TrialSystemAttributeModel.trial_id == trial_id,
            models.TrialSystemAttributeModel.key == key).delete()


def trials_changed_since(storage: optuna.storages.BaseStorage, study_id: int, *,
                         after: int, unfinished: set[int]
                         ) -> list[optuna.trial.FrozenTrial] | None:
    """The study's trials created after trial id ``after`` or among ``unfinished`` (ids),
    in one query: the incremental read Optuna's own trial cache makes. None when the
    storage is not an RDB storage (the caller then reads every trial)."""
    backend = unwrap_storage(storage)
    if not isinstance(backend, optuna.storages.RDBStorage):
        return None
    return backend._get_trials(study_id, states=None, included_trial_ids=set(unfinished),
                               trial_id_greater_than=after)


def best_trial_numbers(storage: optuna.storages.BaseStorage, study_id: int, count: int, *,
                       maximize: bool) -> list[tuple[int, float]] | None:
    """(number, first value) of the ``count`` COMPLETE trials with the best first value
    (ties: lower number first), by one ordered query instead of sorting every trial. None
    when the storage is not an RDB storage, or a value is infinite (the caller sorts)."""
    backend = unwrap_storage(storage)
    if not isinstance(backend, optuna.storages.RDBStorage):
        return None
    import sqlalchemy
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session
    from optuna.trial import TrialState

    trial, value = models.TrialModel, models.TrialValueModel
    finite = models.TrialValueModel.TrialValueType.FINITE
    with _create_scoped_session(backend.scoped_session) as session:
        infinite = session.query(sqlalchemy.func.count(value.trial_value_id)).join(
            trial, trial.trial_id == value.trial_id).filter(
            trial.study_id == study_id, trial.state == TrialState.COMPLETE,
            value.objective == 0, value.value_type != finite).scalar()
        if infinite:
            return None
        rows = session.query(trial.number, value.value).join(
            value, sqlalchemy.and_(value.trial_id == trial.trial_id, value.objective == 0)
        ).filter(trial.study_id == study_id, trial.state == TrialState.COMPLETE).order_by(
            value.value.desc() if maximize else value.value.asc(), trial.number.asc()
        ).limit(count).all()
    return [(int(number), float(score)) for number, score in rows]
