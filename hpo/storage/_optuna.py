"""The one place hpo reaches into Optuna's private API, and why.

Optuna's public ``Study`` has no accessor for its storage or id, and a ``Trial`` none for
its storage id, yet hpo must call storage methods directly: to take a grid point under the
study lock (created RUNNING for its worker, then handed out as ``Study.ask`` hands out a
trial it created), to record heartbeats around ask-and-tell, to fail a lost trial and
re-queue it, to keep the result of a trial failed under its feet. ``Study.optimize`` does
the same inside Optuna (``optuna/study/_optimize.py``). Each accessor below is one line, so
an Optuna release that renames one breaks exactly one place (and the tests say which); the
writes below that replace one of RDBStorage's transactions with one of hpo's (a claim, a
trial's end with its records) repeat RDBStorage's own checks and use its helpers.
"""

from __future__ import annotations

from datetime import datetime
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import optuna
from optuna.storages._cached_storage import _CachedStorage  # Optuna internal
from optuna.trial import FrozenTrial, TrialState

from hpo.storage._contract import hpo_storage, unwrap_storage

if TYPE_CHECKING:
    from sqlalchemy.dialects import postgresql, sqlite

__all__ = ["OPTUNA_INTERNALS",
           "storage_of", "stored_trials", "storage_grace", "trial_id", "study_id", "new_trial", "unwrap_storage", "journal_file",
           "journal_study_id", "insert_study_system_attrs",
           "LazyTrialCache", "trial_cache", "count_trials", "TrialGroup", "trial_param_groups",
           "write_trial_user_attrs", "set_user_attrs", "withheld_user_attrs",
           "claim_waiting_trial", "finish_trial", "delete_trial_system_attrs",
           "trial_with_system_attr_in", "best_trial_numbers",
           "count_marked_trials", "withdraw_waiting_trial", "annotate_finished_trial",
           "heartbeat_ages", "create_study_once", "delete_study_once",
           "delete_study_system_attrs"]


def storage_of(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The storage ``study`` reads and writes (Optuna's ``Study._storage``)."""
    return study._storage  # Optuna internal (OPTUNA_INTERNALS)


def stored_trials(study: optuna.Study, states: Sequence[TrialState] | None = None
                  ) -> list[FrozenTrial]:
    """The study's trials (in ``states``) as the database holds them now, not as the
    study's trial cache last saw them: what a decision between workers (a claim, a reap,
    a late result) must read."""
    return list(unwrap_storage(storage_of(study)).get_all_trials(
        study_id(study), deepcopy=False, states=None if states is None else tuple(states)))


def storage_grace(study: optuna.Study) -> float:
    """Seconds without a heartbeat after which the study's storage finds a trial stale
    (Optuna's RDB storage's grace period, default two heartbeat intervals); 0 for a storage
    without heartbeats (a journal file)."""
    backend = unwrap_storage(storage_of(study))
    if not isinstance(backend, optuna.storages.RDBStorage):
        return 0
    return backend.grace_period or 2 * (backend.heartbeat_interval or 0)


def trial_id(trial: optuna.Trial | optuna.trial.FrozenTrial) -> int:
    """The storage id of ``trial`` (not its number): what storage methods take."""
    return trial._trial_id  # Optuna internal (OPTUNA_INTERNALS)


def study_id(study: optuna.Study) -> int:
    """The storage id of ``study`` (the dashboard's URLs use it)."""
    return study._study_id  # Optuna internal (OPTUNA_INTERNALS)


def new_trial(study: optuna.Study, created: int) -> optuna.Trial:
    """The trial ``created`` (RUNNING, made by this worker) as ``Study.ask`` hands out a
    trial it has created: the study's per-trial cache of all trials reset first, as
    ``ask`` does (``Study._thread_local``)."""
    study._thread_local.cached_all_trials = None  # Optuna internal (OPTUNA_INTERNALS)
    return optuna.Trial(study, created)


def journal_file(storage: Any) -> str | None:
    """The log file of a JournalStorage over a file backend, else None."""
    return getattr(getattr(storage, "_backend", None), "_file_path", None)  # Optuna internal


def journal_study_id(storage: Any, trial_id: int) -> int:
    """The id of the study trial ``trial_id`` belongs to, in a JournalStorage (its replayed
    log's map; the storage API has no accessor)."""
    return int(storage._replay_result._trial_id_to_study_id[trial_id])  # Optuna internal


def _read(storage: Any, name: str, query: Any) -> Any:
    """``query()``, through the outage retries of hpo's storage when ``storage`` has them
    (a read of hpo's own rides out a database restart as Optuna's reads do)."""
    hpo = hpo_storage(storage)
    return query() if hpo is None else hpo.call_with_retries(name, lambda retry: query())


#: Every Optuna internal hpo uses (private, or undocumented), checked one by one by
#: ``tests/test_optuna_internals.py`` against the installed Optuna so that a release that
#: drops or renames one fails naming it. ``module:qualname`` is imported; ``Class#attr`` is an
#: attribute of an instance the test makes; ``(a, b)`` are the first parameters, by name,
#: that hpo passes or overrides. Each use in hpo carries a comment "Optuna internal". Keep
#: this list in step with the code (the test also scans hpo/ for private names of Optuna).
OPTUNA_INTERNALS: tuple[str, ...] = (
    # the accessors at the top of this module
    "optuna.study:Study#_storage",
    # the type BaseStorage.get_all_studies returns (a type-only import in _resilient)
    "optuna.study._frozen:FrozenStudy",
    "optuna.study:Study#_study_id",
    "optuna.study:Study#_thread_local.cached_all_trials",
    "optuna.trial:Trial#_trial_id",
    "optuna.trial:FrozenTrial#_trial_id",
    "optuna.storages.journal:JournalStorage#_backend",
    "optuna.storages.journal:JournalStorage#_replay_result._trial_id_to_study_id",
    "optuna.storages.journal:JournalFileBackend#_file_path",
    # LazyTrialCache: Optuna's trial cache, subclassed
    "optuna.storages._cached_storage:_CachedStorage.__init__(self, backend)",
    "optuna.storages._cached_storage:_CachedStorage#_backend",
    ("optuna.storages._cached_storage:_CachedStorage.get_all_trials(self, study_id, deepcopy, "
     "states)"),
    "optuna.storages._cached_storage:_CachedStorage.get_n_trials(self, study_id, state)",
    # hpo's own transactions on Optuna's tables
    ("optuna.storages._rdb.storage:_create_scoped_session(scoped_session, "
     "ignore_integrity_error)"),
    "optuna.storages._rdb.storage:RDBStorage#scoped_session",
    "optuna.storages._rdb.storage:RDBStorage#engine",
    ("optuna.storages._rdb.storage:RDBStorage._set_trial_attr_without_commit(self, session, "
     "model_cls, trial_id, key, value)"),
    ("optuna.storages._rdb.storage:RDBStorage._set_trial_value_without_commit(self, session, "
     "trial, objective, value)"),
    "optuna.storages._base:DEFAULT_STUDY_NAME_PREFIX",
    "optuna.storages._rdb.models:StudyModel.study_id",
    # heartbeat_ages: the reaper reads each RUNNING trial's last heartbeat
    "optuna.storages._rdb.models:TrialHeartbeatModel.trial_id",
    "optuna.storages._rdb.models:TrialHeartbeatModel.heartbeat",
    # hpo.search: whether a grid value lies inside a space's distribution
    "optuna.distributions:FloatDistribution._contains(self, param_value_in_internal_repr)",
    "optuna.distributions:IntDistribution._contains(self, param_value_in_internal_repr)",
    "optuna.distributions:CategoricalDistribution._contains(self, param_value_in_internal_repr)",
    "optuna.storages._rdb.models:StudyModel.study_name",
    "optuna.storages._rdb.models:StudyModel.directions",
    "optuna.storages._rdb.models:StudyModel.find_by_name(study_name, session)",
    "optuna.storages._rdb.models:StudyModel.find_or_raise_by_id(study_id, session)",
    "optuna.storages._rdb.models:StudyDirectionModel.objective",
    "optuna.storages._rdb.models:StudyDirectionModel.direction",
    "optuna.storages._rdb.models:StudySystemAttributeModel.study_id",
    "optuna.storages._rdb.models:StudySystemAttributeModel.key",
    "optuna.storages._rdb.models:StudySystemAttributeModel.value_json",
    ("optuna.storages._rdb.models:StudySystemAttributeModel.find_by_study_and_key(study, key, "
     "session)"),
    "optuna.storages._rdb.models:TrialModel.trial_id",
    "optuna.storages._rdb.models:TrialModel.study_id",
    "optuna.storages._rdb.models:TrialModel.number",
    "optuna.storages._rdb.models:TrialModel.state",
    "optuna.storages._rdb.models:TrialModel.datetime_start",
    "optuna.storages._rdb.models:TrialModel.datetime_complete",
    ("optuna.storages._rdb.models:TrialModel.find_or_raise_by_id(trial_id, session, "
     "for_update)"),
    "optuna.storages._rdb.models:TrialSystemAttributeModel.trial_id",
    "optuna.storages._rdb.models:TrialSystemAttributeModel.key",
    "optuna.storages._rdb.models:TrialSystemAttributeModel.value_json",
    "optuna.storages._rdb.models:TrialUserAttributeModel.trial_id",
    "optuna.storages._rdb.models:TrialUserAttributeModel.key",
    "optuna.storages._rdb.models:TrialUserAttributeModel.value_json",
    "optuna.storages._rdb.models:TrialParamModel.param_id",
    "optuna.storages._rdb.models:TrialParamModel.trial_id",
    "optuna.storages._rdb.models:TrialParamModel.param_name",
    "optuna.storages._rdb.models:TrialParamModel.param_value",
    "optuna.storages._rdb.models:TrialParamModel.distribution_json",
    "optuna.storages._rdb.models:TrialValueModel.trial_value_id",
    "optuna.storages._rdb.models:TrialValueModel.trial_id",
    "optuna.storages._rdb.models:TrialValueModel.objective",
    "optuna.storages._rdb.models:TrialValueModel.value",
    "optuna.storages._rdb.models:TrialValueModel.value_type",
    "optuna.storages._rdb.models:TrialValueModel.TrialValueType.FINITE",
    # ResilientRDBStorage: RDBStorage's private methods it overrides and calls
    "optuna.storages._rdb.storage:RDBStorage.__getstate__(self)",
    "optuna.storages._rdb.storage:RDBStorage.__setstate__(self, state)",
    "optuna.storages._rdb.storage:RDBStorage._create_new_trial(self, study_id, template_trial)",
    ("optuna.storages._rdb.storage:RDBStorage._get_prepared_new_trial(self, study_id, "
     "template_trial, session)"),
    ("optuna.storages._rdb.storage:RDBStorage._set_trial_param(self, trial_id, param_name, "
     "param_value_internal, distribution, previous_distribution)"),
    "optuna.storages._rdb.storage:RDBStorage._get_trials(self, study_id, states)",
    "optuna.storages._rdb.storage:RDBStorage._get_best_trial_id(self, study_id, direction)",
    "optuna.storages._rdb.storage:RDBStorage._get_stale_trial_ids(self, study_id)",
)


_UNFINISHED = frozenset({TrialState.WAITING, TrialState.RUNNING})


class LazyTrialCache(_CachedStorage):
    """Optuna's trial cache (``_CachedStorage``), filled only once something asks for the
    study's finished trials.

    Optuna wraps an RDB storage in ``_CachedStorage``, which loads *every* trial of a study,
    with all its attributes, at the first ``get_all_trials`` of any kind, including the
    WAITING-only read of each ``study.ask()``: at 100,000 trials a worker spent minutes in
    its first ``ask`` before training anything. Here a read of WAITING and/or RUNNING trials
    only, before the finished ones are needed, is a filtered query on the database (a
    handful of rows); the first read that needs finished trials (TPE, a pruner, a report)
    loads the cache as Optuna does, and every read after that is Optuna's incremental one.
    """

    def __init__(self, backend: optuna.storages.RDBStorage) -> None:
        super().__init__(backend)
        self._loaded: set[int] = set()

    def get_all_trials(self, study_id: int, deepcopy: bool = True,
                       states: Any = None) -> list[optuna.trial.FrozenTrial]:
        if study_id not in self._loaded:
            if states is not None and isinstance(states, (tuple, list, set, frozenset)) \
                    and _UNFINISHED.issuperset(states):
                return self._backend.get_all_trials(study_id, deepcopy=deepcopy,
                                                    states=tuple(states))
            self._loaded.add(study_id)
        return super().get_all_trials(study_id, deepcopy=deepcopy, states=states)

    def get_n_trials(self, study_id: int, state: Any = None) -> int:
        if study_id not in self._loaded:  # a count on the database, not a load
            return count_trials(self._backend, study_id, state)
        return super().get_n_trials(study_id, state)


def count_trials(storage: optuna.storages.RDBStorage, study_id: int,
                 state: TrialState | tuple[TrialState, ...] | None = None) -> int:
    """How many trials of the study are in ``state`` (any, if None): one ``COUNT`` query
    (RDBStorage counts by reading every trial whole)."""
    import sqlalchemy
    from optuna.storages._rdb import models  # Optuna internal (OPTUNA_INTERNALS)
    from optuna.storages._rdb.storage import _create_scoped_session  # Optuna internal

    trial = models.TrialModel
    query = [trial.study_id == study_id]
    if state is not None:
        query.append(trial.state.in_([state] if isinstance(state, TrialState) else state))
    def count() -> int:
        with _create_scoped_session(storage.scoped_session) as session:
            return int(session.query(sqlalchemy.func.count(trial.trial_id)).filter(
                *query).scalar())

    return int(_read(storage, "count_trials", count))


def trial_cache(storage: optuna.storages.BaseStorage) -> optuna.storages.BaseStorage:
    """``storage`` as hpo hands it to ``optuna.create_study``: an RDB storage in a
    :class:`LazyTrialCache` (Optuna would wrap it in its eager ``_CachedStorage``), any
    other storage as it is."""
    if isinstance(storage, optuna.storages.RDBStorage):
        return LazyTrialCache(storage)
    return storage


def write_trial_user_attrs(storage: optuna.storages.RDBStorage, trial_id: int,
                           attrs: dict[str, Any], drop: Sequence[str] = ()) -> None:
    """Sets several user attributes of a trial in one transaction and, on PostgreSQL,
    SQLite and MySQL, one statement: the upsert RDBStorage makes per attribute (each with
    its own read of the trial: 25 attributes cost 50 statements), made for all of them at
    once. The system attributes named in ``drop`` leave the trial in the same transaction.

    Raises:
        optuna.exceptions.UpdateFinishedTrialError: The trial is finished; nothing written.
    """
    from optuna.storages._rdb import models  # Optuna internal (OPTUNA_INTERNALS)
    from optuna.storages._rdb.storage import _create_scoped_session  # Optuna internal

    with _create_scoped_session(storage.scoped_session, True) as session:
        trial = models.TrialModel.find_or_raise_by_id(trial_id, session)
        storage.check_trial_is_updatable(trial_id, trial.state)
        _upsert_user_attrs(storage, session, trial_id, attrs)
        _drop_system_attrs(session, trial_id, drop)


def _upsert_user_attrs(storage: optuna.storages.RDBStorage, session: Any, trial_id: int,
                       attrs: dict[str, Any]) -> None:
    """``attrs`` as the trial's user attributes, in ``session``: one statement where the
    database has an upsert (as RDBStorage checks), else RDBStorage's own write of each."""
    import json
    import sqlite3

    from optuna.storages._rdb import models  # Optuna internal (OPTUNA_INTERNALS)

    model = models.TrialUserAttributeModel
    rows = [{"trial_id": trial_id, "key": key, "value_json": json.dumps(value)}
            for key, value in attrs.items()]
    dialect = storage.engine.name
    if rows and (dialect == "postgresql" or dialect == "sqlite" and
                 sqlite3.sqlite_version_info >= (3, 24, 0)):
        statement = _upsert(dialect, model).values(rows)
        session.execute(statement.on_conflict_do_update(
            index_elements=[model.trial_id, model.key],
            set_={"value_json": statement.excluded.value_json}))
    elif rows and dialect == "mysql":
        from sqlalchemy.dialects.mysql import insert as mysql_insert

        on_mysql = mysql_insert(model).values(rows)
        session.execute(on_mysql.on_duplicate_key_update(
            value_json=on_mysql.inserted.value_json))
    else:
        for key, value in attrs.items():
            storage._set_trial_attr_without_commit(session, model, trial_id, key, value)


def _upsert(dialect: str, model: Any) -> postgresql.Insert | sqlite.Insert:
    """An INSERT into ``model`` with the ON CONFLICT clause of PostgreSQL or SQLite."""
    from sqlalchemy.dialects import postgresql, sqlite

    if dialect == "postgresql":
        return postgresql.insert(model)
    return sqlite.insert(model)


def _drop_system_attrs(session: Any, trial_id: int, keys: Sequence[str]) -> None:
    from optuna.storages._rdb import models  # Optuna internal (OPTUNA_INTERNALS)

    if keys:
        session.query(models.TrialSystemAttributeModel).filter(
            models.TrialSystemAttributeModel.trial_id == trial_id,
            models.TrialSystemAttributeModel.key.in_(list(keys))).delete(
            synchronize_session=False)


def _insert_study_system_attrs(storage: optuna.storages.RDBStorage, session: Any,
                               study_id: int, attrs: dict[str, Any]) -> None:
    """``attrs`` as new study system attributes, in ``session``; a key the study already
    has keeps its value. One statement where the database has an upsert."""
    import json
    import sqlite3

    from optuna.storages._rdb import models

    model = models.StudySystemAttributeModel
    rows = [{"study_id": study_id, "key": key, "value_json": json.dumps(value)}
            for key, value in attrs.items()]
    if not rows:
        return
    dialect = storage.engine.name
    if dialect == "postgresql" or dialect == "sqlite" and \
            sqlite3.sqlite_version_info >= (3, 24, 0):
        session.execute(_upsert(dialect, model).values(rows).on_conflict_do_nothing(
            index_elements=[model.study_id, model.key]))
    elif dialect == "mysql":
        from sqlalchemy.dialects.mysql import insert as mysql_insert

        statement = mysql_insert(model).values(rows)
        session.execute(statement.on_duplicate_key_update(value_json=model.value_json))
    else:
        stored = {key for (key,) in session.query(model.key).filter(
            model.study_id == study_id, model.key.in_(list(attrs)))}
        session.add_all(model(**row) for row in rows if row["key"] not in stored)


def insert_study_system_attrs(storage: optuna.storages.RDBStorage, study_id: int,
                              attrs: dict[str, Any]) -> None:
    """Adds study system attributes in one transaction; a key already there keeps its
    value (idempotent)."""
    from optuna.storages._rdb.storage import _create_scoped_session

    with _create_scoped_session(storage.scoped_session, True) as session:
        _insert_study_system_attrs(storage, session, study_id, attrs)


def set_user_attrs(storage: optuna.storages.BaseStorage, trial_id: int,
                   attrs: dict[str, Any], *, with_end: bool = False) -> None:
    """Sets user attributes of a RUNNING trial: in one transaction on hpo's RDB storage,
    one call each on any other storage. ``with_end``: the trial's last records, written
    with its end by hpo's RDB storage (one transaction fewer; see
    :meth:`hpo.storage.ResilientRDBStorage.set_trial_user_attrs`), at once elsewhere.

    Raises:
        optuna.exceptions.UpdateFinishedTrialError: The trial is finished (another worker
            failed it as stale); nothing was written.
    """
    hpo = hpo_storage(storage)
    if hpo is not None:
        hpo.set_trial_user_attrs(trial_id, attrs, with_end=with_end)
        return
    for key, value in attrs.items():
        storage.set_trial_user_attr(trial_id, key, value)


def withheld_user_attrs(storage: optuna.storages.BaseStorage, trial_id: int
                        ) -> dict[str, Any]:
    """The records :func:`set_user_attrs` left for a trial's end that were never written
    (its end found it failed by another worker), for the caller to keep elsewhere."""
    hpo = hpo_storage(storage)
    return {} if hpo is None else hpo.take_withheld_user_attrs(trial_id)


def claim_waiting_trial(storage: optuna.storages.RDBStorage, trial_id: int, key: str,
                        token: str, drop: Sequence[str] = (), *,
                        started: datetime | None = None) -> bool:
    """RDBStorage's WAITING -> RUNNING transition of ``set_trial_state_values`` with a
    system attribute ``key`` = ``token`` written in the same transaction, so that a worker
    whose answer was lost can tell its own claim from another worker's. False when the
    trial is no longer WAITING. The system attributes named in ``drop`` leave the trial in
    the same transaction; ``started`` is the trial's start (default: now)."""
    import sqlalchemy.exc
    from optuna.storages._rdb import models  # Optuna internal (OPTUNA_INTERNALS)
    from optuna.storages._rdb.storage import _create_scoped_session  # Optuna internal
    from optuna.trial import TrialState

    try:
        with _create_scoped_session(storage.scoped_session) as session:
            trial = models.TrialModel.find_or_raise_by_id(trial_id, session, for_update=True)
            storage.check_trial_is_updatable(trial_id, trial.state)
            if trial.state != TrialState.WAITING:
                return False
            trial.state = TrialState.RUNNING
            trial.datetime_start = started or datetime.now()
            storage._set_trial_attr_without_commit(
                session, models.TrialSystemAttributeModel, trial_id, key, token)
            _drop_system_attrs(session, trial_id, drop)
    except sqlalchemy.exc.IntegrityError:
        return False
    return True


def finish_trial(storage: optuna.storages.RDBStorage, trial_id: int, state: TrialState,
                 values: Sequence[float] | None, completed: datetime,
                 drop: Sequence[str] = (), user_attrs: dict[str, Any] | None = None,
                 study_attrs: dict[str, Any] | None = None) -> bool:
    """RDBStorage's ``set_trial_state_values`` to a finished ``state``, with its end time
    ``completed`` chosen by the caller (who then knows the trial as stored without reading
    it back); the trial's last ``user_attrs`` written, the system attributes named in
    ``drop`` removed and the new study system attributes ``study_attrs`` (the trial's
    dashboard note; a key already there keeps its value) added in the same transaction.
    False where RDBStorage returns False (an integrity error).

    This check is the fence of a worker's claim: the trial's row is locked and must still
    be RUNNING in the transaction that ends it. A trial another worker failed as stale (its
    worker paused, suspended or cut off) can never be RUNNING again, so a late end is
    refused here, and the worker keeps its result only as
    :func:`hpo.execution` decides under the study lock (a record on the failed trial once
    the point's retry was taken).

    Raises:
        optuna.exceptions.UpdateFinishedTrialError: The trial had already finished.
    """
    import sqlalchemy.exc
    from optuna.storages._rdb import models  # Optuna internal (OPTUNA_INTERNALS)
    from optuna.storages._rdb.storage import _create_scoped_session  # Optuna internal

    try:
        with _create_scoped_session(storage.scoped_session) as session:
            trial = models.TrialModel.find_or_raise_by_id(trial_id, session, for_update=True)
            storage.check_trial_is_updatable(trial_id, trial.state)
            for objective, value in enumerate(values or ()):
                storage._set_trial_value_without_commit(session, trial, objective, value)
            if user_attrs:
                _upsert_user_attrs(storage, session, trial_id, user_attrs)
            trial.state = state
            trial.datetime_complete = completed
            _drop_system_attrs(session, trial_id, drop)
            if study_attrs:
                # Every trial row has its study: Optuna's column is nullable in type only.
                assert trial.study_id is not None
                _insert_study_system_attrs(storage, session, trial.study_id, study_attrs)
    except sqlalchemy.exc.IntegrityError:
        return False
    return True


def trial_with_system_attr_in(session: Any, study_id: int, key: str, value: Any) -> Any:
    """The study's trial (Optuna's ``TrialModel``, in ``session``) whose system attribute
    ``key`` is ``value``, if any: what a retried creation looks for in its own transaction,
    under the study's row lock that RDBStorage's trial creation takes."""
    import json

    from optuna.storages._rdb import models  # Optuna internal (OPTUNA_INTERNALS)

    attr, trial = models.TrialSystemAttributeModel, models.TrialModel
    return session.query(trial).join(attr, trial.trial_id == attr.trial_id).filter(
        trial.study_id == study_id, attr.key == key,
        attr.value_json == json.dumps(value)).first()


def create_study_once(storage: optuna.storages.RDBStorage,
                      directions: Sequence[optuna.study.StudyDirection], name: str, key: str,
                      token: str, *, retry: bool) -> int:
    """RDBStorage's ``create_new_study`` of the study ``name``, with the system attribute
    ``key`` = ``token`` written in the same transaction; its id. ``retry``: an earlier try
    may have been stored although its answer was lost; a study of that name carrying that
    token is that try's, and its id is returned instead of a DuplicatedStudyError (checked
    in this transaction, before the insert).

    Raises:
        optuna.exceptions.DuplicatedStudyError: Another study has that name.
    """
    import json

    import sqlalchemy.exc
    from optuna.storages._rdb import models  # Optuna internal (OPTUNA_INTERNALS)
    from optuna.storages._rdb.storage import _create_scoped_session  # Optuna internal

    duplicate = optuna.exceptions.DuplicatedStudyError(
        f"Another study with name '{name}' already exists. Please specify a different name, "
        "or reuse the existing one by setting `load_if_exists` (for Python API) or "
        "`--skip-if-exists` flag (for CLI).")
    try:
        with _create_scoped_session(storage.scoped_session) as session:
            if retry:
                found = models.StudyModel.find_by_name(name, session)
                if found is not None:
                    mark = models.StudySystemAttributeModel.find_by_study_and_key(
                        found, key, session)
                    if mark is not None and json.loads(mark.value_json) == token:
                        return int(found.study_id)  # stored by the try whose answer was lost
                    raise duplicate
            study = models.StudyModel(study_name=name, directions=[
                models.StudyDirectionModel(objective=objective, direction=direction)
                for objective, direction in enumerate(list(directions))])
            session.add(study)
            session.flush()
            session.add(models.StudySystemAttributeModel(
                study_id=study.study_id, key=key, value_json=json.dumps(token)))
            created = int(study.study_id)
    except sqlalchemy.exc.IntegrityError:
        raise duplicate from None
    return created


def delete_study_once(storage: optuna.storages.RDBStorage, study_id: int, *,
                      retry: bool) -> None:
    """RDBStorage's ``delete_study``; ``retry``: an earlier try may have been stored although
    its answer was lost, so a study already gone is taken as deleted (checked in this
    transaction) instead of a KeyError.

    Raises:
        KeyError: No study has that id (and this is the first try).
    """
    from optuna.storages._rdb import models  # Optuna internal (OPTUNA_INTERNALS)
    from optuna.storages._rdb.storage import _create_scoped_session  # Optuna internal

    with _create_scoped_session(storage.scoped_session, True) as session:
        study = session.query(models.StudyModel).filter(
            models.StudyModel.study_id == study_id).one_or_none()
        if study is None:
            if retry:
                return
            models.StudyModel.find_or_raise_by_id(study_id, session)  # Optuna's KeyError
        session.delete(study)


def delete_study_system_attrs(storage: optuna.storages.RDBStorage, study_id: int,
                              keys: Sequence[str]) -> None:
    """Deletes system attributes of a study (idempotent)."""
    from optuna.storages._rdb import models  # Optuna internal (OPTUNA_INTERNALS)
    from optuna.storages._rdb.storage import _create_scoped_session  # Optuna internal

    model = models.StudySystemAttributeModel
    with _create_scoped_session(storage.scoped_session, True) as session:
        session.query(model).filter(model.study_id == study_id, model.key.in_(list(keys))
                                    ).delete(synchronize_session=False)


def delete_trial_system_attrs(storage: optuna.storages.RDBStorage, trial_id: int,
                              keys: Sequence[str]) -> None:
    """Deletes system attributes of a trial, finished or not (idempotent)."""
    from optuna.storages._rdb.storage import _create_scoped_session  # Optuna internal

    with _create_scoped_session(storage.scoped_session, True) as session:
        _drop_system_attrs(session, trial_id, keys)


@dataclass(frozen=True, slots=True)
class TrialGroup:
    """Trials of one state with the same values of the parameters asked for: ``count`` of
    them, the newest with id ``last_id``. An unfinished trial is a group of its own
    (``trial_id`` set, ``count`` 1); finished ones are counted, not listed. ``flagged``:
    the group's trials carry the system attribute asked for (``flag``), counted apart."""

    state: TrialState
    trial_id: int | None
    params: dict[str, Any]
    count: int
    last_id: int
    flagged: bool = False


def trial_param_groups(storage: optuna.storages.BaseStorage, study_id: int,
                       names: Sequence[str], *, after: int, unfinished: set[int],
                       flag: str | None = None) -> list[TrialGroup] | None:
    """The study's trials created after trial id ``after`` or among ``unfinished`` (ids),
    grouped by state and by their values of the parameters ``names`` (absent: None), with
    each WAITING or RUNNING trial on its own, and apart those that carry the system
    attribute ``flag`` (when given): what a grid claim needs, in queries whose
    answer grows with the grid, not with the study (issue 16: reading 100,000 trials whole,
    attributes and all, took minutes; reading their parameters row by row, seconds). Each
    trial is read by exactly one of them, so a trial that finishes meanwhile is seen either
    unfinished or finished, never both or neither. None when the storage is not an RDB
    storage (the caller then reads every trial)."""
    backend = unwrap_storage(storage)
    if not isinstance(backend, optuna.storages.RDBStorage):
        return None
    import sqlalchemy
    from optuna.distributions import json_to_distribution
    from optuna.storages._rdb import models  # Optuna internal (OPTUNA_INTERNALS)
    from optuna.storages._rdb.storage import _create_scoped_session  # Optuna internal

    trial = models.TrialModel
    own = sqlalchemy.case(
        (trial.state.in_([TrialState.WAITING, TrialState.RUNNING]), trial.trial_id),
        else_=sqlalchemy.null())
    columns: list[Any] = [trial.state, own]
    examples: list[Any] = []  # a parameter row of each group, for its distribution
    query_joins = []
    if flag is not None:  # at most one row per trial: (trial_id, key) is unique
        marked = sqlalchemy.orm.aliased(models.TrialSystemAttributeModel)
        query_joins.append((marked, sqlalchemy.and_(marked.trial_id == trial.trial_id,
                                                    marked.key == flag)))
        columns.append(marked.key)
    for name in names:
        param = sqlalchemy.orm.aliased(models.TrialParamModel)
        query_joins.append((param, sqlalchemy.and_(param.trial_id == trial.trial_id,
                                                   param.param_name == name)))
        columns.append(param.param_value)
        examples.append(sqlalchemy.func.min(param.param_id))
    def grouped() -> tuple[list[Any], dict[int, str]]:
        with _create_scoped_session(backend.scoped_session) as session:
            def query(which: Any, *, by_study: bool = True) -> list[Any]:
                # Grouped by the parameters' stored values, not their distributions: Optuna
                # keeps one distribution per parameter name in a study (a categorical's
                # choices, a number's kind), so one row of a group decodes the whole group,
                # and sorting 100,000 rows of ~600-byte distributions went to disk (1.6 s at
                # 100,000 trials on PostgreSQL, against 0.6 s)
                rows = session.query(*columns, *examples,
                                     sqlalchemy.func.count(trial.trial_id),
                                     sqlalchemy.func.max(trial.trial_id))
                for param, on in query_joins:
                    rows = rows.outerjoin(param, on)
                # "study_id + 0": the same test, but no index on study_id can serve it, so
                # the primary key's range does (PostgreSQL without fresh statistics read a
                # 100,000-trial study through its study index: 5.6 ms, against 0.06 ms)
                study = trial.study_id if by_study else trial.study_id + 0
                return list(rows.filter(study == study_id, which).group_by(*columns).all())

            # Two queries, each a range or lookup on the primary key: one with
            # "id > after OR id IN (...)" was a scan of the study's trials (7.9 ms a claim
            # at 100,000 trials on SQLite, against 0.03 ms). The two id sets are disjoint
            # (an unfinished trial was read before, so its id is at most ``after``): each
            # trial is read once, in one state.
            rows = query(trial.trial_id > after, by_study=after < 0)
            if unfinished:
                rows += query(trial.trial_id.in_(sorted(unfinished)))
            first = 2 + (flag is not None) + len(names)  # the example parameter ids
            wanted = sorted({i for row in rows for i in row[first:-2] if i is not None})
            texts: dict[int, str] = {}
            param = models.TrialParamModel
            for start in range(0, len(wanted), 500):  # within any database's parameter limit
                texts.update(session.query(param.param_id, param.distribution_json).filter(
                    param.param_id.in_(wanted[start:start + 500])).all())
            return rows, texts

    rows, texts = _read(backend, "trial_param_groups", grouped)
    decoded: dict[str, optuna.distributions.BaseDistribution] = {}
    groups = []
    for state, owner, *values, count, last in rows:
        flagged = flag is not None and values.pop(0) is not None
        params = {}
        for name, value, example in zip(names, values[:len(names)], values[len(names):]):
            if example is None:
                continue
            text = texts[example]
            distribution = decoded.get(text)
            if distribution is None:
                distribution = decoded[text] = json_to_distribution(text)
            params[name] = distribution.to_external_repr(value)
        groups.append(TrialGroup(state, None if owner is None else int(owner), params,
                                 int(count), int(last), flagged))
    return groups


def best_trial_numbers(storage: optuna.storages.BaseStorage, study_id: int, count: int, *,
                       maximize: bool, without_user_attr: str | None = None
                       ) -> list[tuple[int, float]] | None:
    """(number, first value) of the ``count`` COMPLETE trials with the best first value
    (ties: lower number first), by one ordered query instead of sorting every trial. None
    when the storage is not an RDB storage, or a value is infinite (the caller sorts).
    ``without_user_attr``: leave out the trials that have this user attribute."""
    backend = unwrap_storage(storage)
    if not isinstance(backend, optuna.storages.RDBStorage):
        return None
    import sqlalchemy
    from optuna.storages._rdb import models  # Optuna internal (OPTUNA_INTERNALS)
    from optuna.storages._rdb.storage import _create_scoped_session  # Optuna internal
    from optuna.trial import TrialState

    trial, value = models.TrialModel, models.TrialValueModel
    finite = models.TrialValueModel.TrialValueType.FINITE
    def ranked() -> list[Any] | None:
        with _create_scoped_session(backend.scoped_session) as session:
            infinite = session.query(sqlalchemy.func.count(value.trial_value_id)).join(
                trial, trial.trial_id == value.trial_id).filter(
                trial.study_id == study_id, trial.state == TrialState.COMPLETE,
                value.objective == 0, value.value_type != finite).scalar()
            if infinite:
                return None
            query = session.query(trial.number, value.value).join(
                value, sqlalchemy.and_(value.trial_id == trial.trial_id, value.objective == 0)
            ).filter(trial.study_id == study_id, trial.state == TrialState.COMPLETE)
            if without_user_attr is not None:
                attr = models.TrialUserAttributeModel
                query = query.filter(~sqlalchemy.exists().where(
                    attr.trial_id == trial.trial_id, attr.key == without_user_attr))
            return query.order_by(
                value.value.desc() if maximize else value.value.asc(), trial.number.asc()
            ).limit(count).all()

    rows = _read(backend, "best_trial_numbers", ranked)
    if rows is None:
        return None
    return [(int(number), float(score)) for number, score in rows]


def count_marked_trials(storage: optuna.storages.BaseStorage, study_id: int, key: str,
                        value: Any, *, skip: Sequence[TrialState] = ()) -> int:
    """How many trials of the study carry system attribute ``key`` = ``value``, those in a
    state of ``skip`` left out: one ``COUNT`` on an RDB storage, a scan elsewhere."""
    import json

    import sqlalchemy

    backend = unwrap_storage(storage)
    if not isinstance(backend, optuna.storages.RDBStorage):
        return sum(1 for t in backend.get_all_trials(study_id, deepcopy=False)
                   if t.state not in skip and t.system_attrs.get(key) == value)
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    attr, trial = models.TrialSystemAttributeModel, models.TrialModel

    def count() -> int:
        with _create_scoped_session(backend.scoped_session) as session:
            query = session.query(sqlalchemy.func.count(attr.trial_id)).join(
                trial, trial.trial_id == attr.trial_id).filter(
                trial.study_id == study_id, attr.key == key,
                attr.value_json == json.dumps(value))
            if skip:
                query = query.filter(trial.state.notin_(list(skip)))
            return int(query.scalar())

    return int(_read(backend, "count_marked_trials", count))


def withdraw_waiting_trial(storage: optuna.storages.BaseStorage, trial_id: int,
                           reason: str, mark: str | None = None) -> bool:
    """WAITING -> FAIL with ``reason`` as its ``fail_reason`` (and system attribute ``mark``
    set to True: a trial that never ran), only while no worker has taken it: one
    transaction that checks the state on an RDB storage. False when it is no longer
    WAITING (a worker took it: it runs, or has finished)."""
    backend = unwrap_storage(storage)
    if not isinstance(backend, optuna.storages.RDBStorage):
        if backend.get_trial(trial_id).state != TrialState.WAITING:
            return False
        backend.set_trial_user_attr(trial_id, "fail_reason", reason)
        if mark is not None:
            backend.set_trial_system_attr(trial_id, mark, True)
        return bool(backend.set_trial_state_values(trial_id, TrialState.FAIL))
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    def attempt() -> bool:
        with _create_scoped_session(backend.scoped_session) as session:
            trial = models.TrialModel.find_or_raise_by_id(trial_id, session, for_update=True)
            if trial.state != TrialState.WAITING:
                return False
            _upsert_user_attrs(backend, session, trial_id, {"fail_reason": reason})
            if mark is not None:
                _drop_system_attrs(session, trial_id, [mark])
                session.add(models.TrialSystemAttributeModel(
                    trial_id=trial_id, key=mark, value_json="true"))
            trial.state = TrialState.FAIL
            trial.datetime_complete = datetime.now()
        return True

    return bool(_read(backend, "withdraw_waiting_trial", attempt))


def annotate_finished_trial(storage: optuna.storages.BaseStorage, trial_id: int,
                            attrs: dict[str, Any]) -> bool:
    """Writes user attributes onto a trial that has finished (Optuna refuses any write to
    one): a record kept beside its end, never a change of its state or values. False on a
    storage where hpo cannot (journal, in-memory): the caller keeps the record elsewhere."""
    backend = unwrap_storage(storage)
    if not isinstance(backend, optuna.storages.RDBStorage):
        return False
    from optuna.storages._rdb.storage import _create_scoped_session

    def attempt() -> None:
        with _create_scoped_session(backend.scoped_session) as session:
            _upsert_user_attrs(backend, session, trial_id, attrs)

    _read(backend, "annotate_finished_trial", attempt)
    return True


def heartbeat_ages(storage: optuna.storages.BaseStorage, trial_ids: Sequence[int]
                   ) -> dict[int, float]:
    """Seconds since each trial's last heartbeat, by the database's clock (the clock the
    stale check uses); trials without one are absent. Empty on a storage without
    heartbeats."""
    import sqlalchemy

    backend = unwrap_storage(storage)
    if not isinstance(backend, optuna.storages.RDBStorage) or not trial_ids:
        return {}
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    beat = models.TrialHeartbeatModel  # Optuna internal (OPTUNA_INTERNALS)

    def read() -> dict[int, float]:
        with _create_scoped_session(backend.scoped_session) as session:
            now = session.execute(sqlalchemy.func.now()).scalar_one()
            rows = session.query(beat.trial_id, beat.heartbeat).filter(
                beat.trial_id.in_(list(trial_ids))).all()
        now = now.replace(tzinfo=None)  # PostgreSQL's is aware, the stored one naive
        return {int(tid): (now - at.replace(tzinfo=None)).total_seconds() for tid, at in rows}

    return dict(_read(backend, "heartbeat_ages", read))
