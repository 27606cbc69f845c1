"""Lost acknowledgements injected where the COMMIT happens, for every write of hpo's storage,
on SQLite and PostgreSQL.

The fault sits in the dialect's ``do_commit`` (below the ORM session, below Optuna's
``_create_scoped_session`` and its own retry loop in ``RDBStorage._create_new_trial``): the
first committing transaction that wrote something after the fault is armed either

* ``lost``: reaches the database, then the caller gets a dropped connection (the answer is
  lost), or
* ``before``: never reaches it (the connection drops before the COMMIT).

Each write runs twice on the same database, once without a fault and once with it; the
call must return the same answer (a success, not an error), and the rows stored for the
study must be the same (nothing stored twice, no second trial or study).
"""

from __future__ import annotations

import os
import types
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import optuna
import pytest
import sqlalchemy
from optuna.distributions import FloatDistribution
from optuna.study import StudyDirection
from optuna.trial import TrialState

import hpo.storage._resilient as resilient_module
from hpo.storage import ResilientRDBStorage, StorageOptions, close_storage, open_storage

_WRITES = ("INSERT", "UPDATE", "DELETE")


class CommitFaults:
    """Fails the first COMMIT of a transaction that wrote, once armed (see the module's
    docstring); ``injected`` counts the faults."""

    def __init__(self, engine: sqlalchemy.Engine) -> None:
        self.dialect = engine.dialect
        self.mode: str | None = None
        self.injected = 0
        self._wrote: set[int] = set()
        self._commit = engine.dialect.do_commit
        self._rollback = engine.dialect.do_rollback
        engine.dialect.do_commit = self._do_commit  # type: ignore[method-assign]
        engine.dialect.do_rollback = self._do_rollback  # type: ignore[method-assign]
        sqlalchemy.event.listen(engine, "before_cursor_execute", self._statement)

    @staticmethod
    def _raw(connection: Any) -> int:
        return id(getattr(connection, "dbapi_connection", connection))

    def _statement(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().split(None, 1)[0].upper() in _WRITES:
            self._wrote.add(self._raw(conn.connection))

    def _do_rollback(self, connection: Any) -> None:
        self._wrote.discard(self._raw(connection))
        self._rollback(connection)

    def _do_commit(self, connection: Any) -> None:
        wrote = self._raw(connection) in self._wrote
        self._wrote.discard(self._raw(connection))
        mode, fail = self.mode, self.mode is not None and wrote
        if not fail:
            self._commit(connection)
            return
        self.mode = None
        self.injected += 1
        if mode == "lost":
            self._commit(connection)  # stored; the answer never comes back
        dbapi = self.dialect.loaded_dbapi
        if self.dialect.name == "postgresql":  # the connection is gone, as after a restart
            getattr(connection, "dbapi_connection", connection).close()
        raise dbapi.OperationalError("server closed the connection unexpectedly")


@pytest.fixture(scope="module")
def _postgres_url() -> Iterator[str]:
    url = os.environ.get("HPO_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("HPO_TEST_POSTGRES_URL is not set (no PostgreSQL server to test against)")
    schema = f"commit_{uuid.uuid4().hex[:10]}"
    admin = sqlalchemy.create_engine(url, isolation_level="AUTOCOMMIT",
                                     poolclass=sqlalchemy.pool.NullPool)
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f"CREATE SCHEMA {schema}"))
    separator = "&" if "?" in url else "?"
    try:
        yield f"{url}{separator}options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql",
                                                               marks=pytest.mark.postgres)])
def faulty(request, tmp_path_factory) -> Iterator[tuple[ResilientRDBStorage, CommitFaults]]:
    """hpo's storage as ``hpo run`` opens it, with the commit fault installed (one database
    per module and kind; every test uses studies of its own)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('commit') / 'faults.db'}"
    else:
        url = request.getfixturevalue("_postgres_url")
    storage = open_storage(url, StorageOptions())
    assert isinstance(storage, ResilientRDBStorage)
    yield storage, CommitFaults(storage.engine)
    close_storage(storage)


@pytest.fixture(autouse=True)
def _quick_retries(monkeypatch):
    """hpo's backoff and Optuna's own sleep between its trial-creation tries, made short."""
    monkeypatch.setattr(resilient_module, "_FIRST_DELAY", 0.001)
    from optuna.storages._rdb import storage as rdb

    monkeypatch.setattr(rdb, "time", types.SimpleNamespace(sleep=lambda seconds: None))


class Ctx(types.SimpleNamespace):
    storage: ResilientRDBStorage
    name: str
    study_id: int
    trial_id: int
    waiting_id: int


def _template(state: TrialState) -> optuna.trial.FrozenTrial:
    return optuna.trial.create_trial(
        state=state, value=0.5 if state == TrialState.COMPLETE else None,
        params={"x": 0.25}, distributions={"x": FloatDistribution(0, 1)},
        user_attrs={"u": 1}, system_attrs={"s": 2}, intermediate_values={0: 0.1})


def _with_end(c: Ctx) -> bool:
    c.storage.set_trial_user_attrs(c.trial_id, {"seconds": 1.5}, with_end=True)  # no write
    return c.storage.set_trial_state_values(c.trial_id, TrialState.COMPLETE, [0.5])


#: Every write of hpo's storage: name -> what it does to the study set up for it.
WRITES: dict[str, Callable[[Ctx], Any]] = {
    "create_new_study": lambda c: c.storage.create_new_study(
        [StudyDirection.MINIMIZE], c.name + "-new"),
    "create_new_study (unnamed)": lambda c: c.storage.create_new_study(
        [StudyDirection.MAXIMIZE, StudyDirection.MINIMIZE]),
    "delete_study": lambda c: c.storage.delete_study(c.study_id),
    "set_study_user_attr": lambda c: c.storage.set_study_user_attr(c.study_id, "k", [1, 2]),
    "set_study_system_attr": lambda c: c.storage.set_study_system_attr(c.study_id, "k", 3),
    "create_new_trial": lambda c: c.storage.create_new_trial(c.study_id),
    "create_new_trial (enqueued)": lambda c: c.storage.create_new_trial(
        c.study_id, _template(TrialState.WAITING)),
    "create_new_trial (finished)": lambda c: c.storage.create_new_trial(
        c.study_id, _template(TrialState.COMPLETE)),
    "set_trial_param": lambda c: c.storage.set_trial_param(
        c.trial_id, "x", 0.5, FloatDistribution(0, 1)),
    "set_trial_state_values (complete)": lambda c: c.storage.set_trial_state_values(
        c.trial_id, TrialState.COMPLETE, [0.5]),
    "set_trial_state_values (fail)": lambda c: c.storage.set_trial_state_values(
        c.trial_id, TrialState.FAIL),
    "set_trial_state_values (claim)": lambda c: c.storage.set_trial_state_values(
        c.waiting_id, TrialState.RUNNING),
    "set_trial_state_values (requeue)": lambda c: c.storage.set_trial_state_values(
        c.trial_id, TrialState.WAITING),
    "set_trial_intermediate_value": lambda c: c.storage.set_trial_intermediate_value(
        c.trial_id, 2, 0.25),
    "set_trial_user_attr": lambda c: c.storage.set_trial_user_attr(c.trial_id, "k", {"a": 1}),
    "set_trial_system_attr": lambda c: c.storage.set_trial_system_attr(c.trial_id, "k", 1),
    "set_trial_user_attrs (batched)": lambda c: c.storage.set_trial_user_attrs(
        c.trial_id, {"a": 1, "b": [2]}),
    "set_trial_user_attrs (with the end)": _with_end,
    "record_heartbeat": lambda c: c.storage.record_heartbeat(c.trial_id),
    "forget_tokens": lambda c: c.storage.forget_tokens(c.trial_id),
}


def _dump(engine: sqlalchemy.Engine, study_id: int) -> dict[str, list[tuple]]:
    """Every row stored for the study, without ids, names and times (which differ between
    two runs of one write); hpo's token values are replaced by their key."""
    by_trial = "JOIN trials t ON t.trial_id = x.trial_id WHERE t.study_id = :s"
    queries = {
        "studies": "SELECT count(*) FROM studies x WHERE x.study_id = :s",
        "study_directions": "SELECT objective, direction FROM study_directions x "
                            "WHERE x.study_id = :s",
        "study_user_attributes": "SELECT key, value_json FROM study_user_attributes x "
                                 "WHERE x.study_id = :s",
        "study_system_attributes": "SELECT key, value_json FROM study_system_attributes x "
                                   "WHERE x.study_id = :s",
        "trials": "SELECT number, state FROM trials x WHERE x.study_id = :s",
        "trial_params": f"SELECT t.number, param_name, param_value, distribution_json "
                        f"FROM trial_params x {by_trial}",
        "trial_values": f"SELECT t.number, objective, value, value_type FROM trial_values x "
                        f"{by_trial}",
        "trial_intermediate_values": f"SELECT t.number, step, intermediate_value, "
                                     f"intermediate_value_type FROM trial_intermediate_values x "
                                     f"{by_trial}",
        "trial_user_attributes": f"SELECT t.number, key, value_json FROM trial_user_attributes"
                                 f" x {by_trial}",
        "trial_system_attributes": f"SELECT t.number, key, CASE WHEN key LIKE 'hpo:%' THEN key "
                                   f"ELSE value_json END FROM trial_system_attributes x "
                                   f"{by_trial}",
        "trial_heartbeats": f"SELECT t.number FROM trial_heartbeats x {by_trial}",
    }
    with engine.connect() as connection:
        return {table: sorted(tuple(map(str, row)) for row in connection.execute(
            sqlalchemy.text(query), {"s": study_id})) for table, query in queries.items()}


def _count_studies(engine: sqlalchemy.Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(sqlalchemy.text("SELECT count(*) FROM studies")).scalar())


def _run(storage: ResilientRDBStorage, faults: CommitFaults, write: str,
         mode: str | None) -> tuple[Any, dict[str, list[tuple]], int]:
    """Sets up a study (a RUNNING trial, a WAITING one), makes ``write`` with the fault
    ``mode`` armed; its answer (an id as the number or the study it names), the rows stored
    and how many studies the database gained."""
    name = f"{write.split()[0]}-{uuid.uuid4().hex[:8]}"
    study_id = storage.create_new_study([StudyDirection.MINIMIZE], name)
    ctx = Ctx(storage=storage, name=name, study_id=study_id,
              trial_id=storage.create_new_trial(study_id),
              waiting_id=storage.create_new_trial(study_id, _template(TrialState.WAITING)))
    before = _count_studies(storage.engine)
    faults.mode, injected = mode, faults.injected
    try:
        answer = WRITES[write](ctx)
    finally:
        faults.mode = None
    assert faults.injected == injected + (mode is not None), "the write committed nothing"
    dumped = study_id
    if write.startswith("create_new_study"):
        dumped, answer = answer, "the new study"
        assert storage.get_study_id_from_name(
            storage.get_study_name_from_id(dumped)) == dumped
        assert storage.get_study_system_attrs(dumped) == {}
    elif write.startswith("create_new_trial"):
        answer = ("trial number", storage.get_trial(answer).number)
    return answer, _dump(storage.engine, dumped), _count_studies(storage.engine) - before


_clean: dict[tuple[int, str], Any] = {}  # (storage, write) -> the run without a fault


@pytest.mark.parametrize("mode", ["lost", "before"])
@pytest.mark.parametrize("write", list(WRITES))
def test_a_write_whose_commit_fails_is_stored_once_and_succeeds(faulty, write, mode):
    storage, faults = faulty
    key = (id(storage), write)
    if key not in _clean:
        _clean[key] = _run(storage, faults, write, None)
    assert _run(storage, faults, write, mode) == _clean[key]


def test_the_fault_makes_stock_optuna_store_a_trial_twice(faulty):
    """The fault is real: stock RDBStorage, whose own loop retries the creation, stores a
    second trial after a lost acknowledgement (which hpo's storage must not)."""
    storage, _ = faulty
    stock = optuna.storages.RDBStorage(storage.engine.url.render_as_string(hide_password=False),
                                       skip_compatibility_check=True)
    try:
        stock_faults = CommitFaults(stock.engine)
        study_id = stock.create_new_study([StudyDirection.MINIMIZE],
                                          f"stock-{uuid.uuid4().hex[:8]}")
        stock_faults.mode = "lost"
        stock.create_new_trial(study_id)
        assert stock_faults.injected == 1
        assert len(stock.get_all_trials(study_id)) == 2
    finally:
        stock.engine.dispose()


def test_a_lost_study_creation_is_not_a_duplicated_study_through_optuna(faulty):
    """Through ``optuna.create_study`` (no load_if_exists): a study whose creation's answer
    was lost is created once, with no error."""
    storage, faults = faulty
    name = f"api-{uuid.uuid4().hex[:8]}"
    faults.mode = "lost"
    study = optuna.create_study(study_name=name, storage=storage)
    assert storage.get_study_system_attrs(study._study_id) == {}
    assert faults.injected and faults.mode is None
    assert [s.study_name for s in storage.get_all_studies()].count(name) == 1
    with pytest.raises(optuna.exceptions.DuplicatedStudyError):  # a real duplicate still is
        optuna.create_study(study_name=name, storage=storage)
