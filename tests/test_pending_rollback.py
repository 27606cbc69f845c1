"""A connection lost in the middle of a read of trials rides the outage like any other.

Optuna's ``RDBStorage._get_trials`` catches an ``OperationalError`` of its trials query
inside its session block ("Falling back to a slower alternative", meant for too many
variables in an ``IN``) and queries again on the same session. When that error was a lost
connection, SQLAlchemy invalidated the connection inside the open transaction, and the
second query raises ``PendingRollbackError`` ("Can't reconnect until invalid transaction is
rolled back"), not an ``OperationalError``: hpo's storage took it for something other than an
outage, and a worker of ``hpo run`` ended with "lost the study database" (a worker cut off
from PostgreSQL behind its PgBouncer pool for 8 s, in CI).
"""

from __future__ import annotations

import uuid
from typing import Any

import optuna
import pytest
import sqlalchemy

import hpo.storage._resilient as resilient_module
from hpo.storage import (
    ResilientRDBStorage,
    StorageOptions,
    close_storage,
    is_connection_error,
    open_storage,
)
from hpo.storage._optuna import study_id


class _TerminateBefore:
    """Terminates (``pg_terminate_backend``, from a connection of its own) the server
    process of the first connection that runs a statement containing ``marker``, just
    before that statement: the server is gone as after a restart or a cut-off, mid-session."""

    def __init__(self, engine: sqlalchemy.Engine, url: str, marker: str) -> None:
        self.marker = marker
        self.terminated = 0
        self._admin = sqlalchemy.create_engine(url, isolation_level="AUTOCOMMIT",
                                               poolclass=sqlalchemy.pool.NullPool)
        sqlalchemy.event.listen(engine, "before_cursor_execute", self._statement)

    def _statement(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if self.terminated or self.marker not in statement:
            return
        self.terminated += 1
        pid = conn.connection.dbapi_connection.info.backend_pid  # psycopg 3
        with self._admin.connect() as admin:
            assert admin.execute(sqlalchemy.text("SELECT pg_terminate_backend(:pid)"),
                                 {"pid": pid}).scalar_one()

    def close(self) -> None:
        self._admin.dispose()


def test_a_connection_invalidated_inside_a_transaction_is_a_connection_error():
    error = sqlalchemy.exc.PendingRollbackError(
        "Can't reconnect until invalid transaction is rolled back.  Please rollback() fully "
        "before proceeding")
    assert is_connection_error(error)
    wrapped = optuna.exceptions.StorageInternalError("An exception is raised during the commit.")
    wrapped.__cause__ = error
    assert is_connection_error(wrapped)


@pytest.mark.postgres
def test_a_connection_lost_during_the_trials_query_is_ridden_out(postgres_url, monkeypatch):
    monkeypatch.setattr(resilient_module, "_FIRST_DELAY", 0.001)
    storage = open_storage(postgres_url, StorageOptions())
    assert isinstance(storage, ResilientRDBStorage)
    fault = _TerminateBefore(storage.engine, postgres_url, "FROM trials")
    fault.terminated = 1  # not armed while the study is made
    try:
        study = optuna.create_study(study_name=f"rollback-{uuid.uuid4().hex[:8]}",
                                    storage=storage)
        for x in (1.0, 2.0):
            trial = study.ask()
            study.tell(trial, x)
        fault.terminated = 0  # armed: the next trials query loses its connection
        trials = storage.get_all_trials(study_id(study), deepcopy=False)
        assert fault.terminated == 1
        assert [t.value for t in trials] == [1.0, 2.0]
        assert storage.retried_errors >= 1
        # and the thread's session is usable afterwards
        assert len(storage.get_all_trials(study_id(study), deepcopy=False)) == 2
    finally:
        fault.close()
        close_storage(storage)
