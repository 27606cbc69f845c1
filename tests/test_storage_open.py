"""Storage at open (issue 26, item 3): what a user meets before any trial.

* A database whose Optuna schema the installed Optuna cannot use: one line naming
  ``optuna storage upgrade`` (before: a RuntimeError traceback).
* An SQLite database in memory: refused before training, in every spelling.
* A server that accepts the connection and never answers: a "connecting to" line, then one
  line within the connect timeout (before: minutes of silence).
* Commands that only read never create a file or a table in someone's database (before:
  ``hpo studies`` wrote Optuna's 13 tables into an empty PostgreSQL database).
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from pathlib import Path

import optuna
import pytest
import sqlalchemy

from hpo.errors import NoStudies, StorageError
from hpo.storage import StorageOptions, close_storage, open_storage
from tests.conftest import run_here


@pytest.fixture()
def empty_postgres(postgres_url):
    """A new database on the PostgreSQL server with no table in it."""
    name = f"hpo_open_{uuid.uuid4().hex[:8]}"
    admin = sqlalchemy.create_engine(postgres_url, isolation_level="AUTOCOMMIT",
                                     poolclass=sqlalchemy.pool.NullPool)
    with admin.connect() as connection:
        connection.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    try:
        yield sqlalchemy.engine.make_url(postgres_url).set(database=name).render_as_string(
            hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _tables(url: str) -> list[str]:
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    try:
        return sqlalchemy.inspect(engine).get_table_names()
    finally:
        engine.dispose()


READ_ONLY = [("studies",), ("status", "demo"), ("trials", "demo"), ("best", "demo"),
             ("report", "demo"), ("reap", "demo"),
             ("export", "demo", "--out", "never.keras")]


@pytest.mark.postgres
def test_read_only_commands_create_nothing_in_an_empty_postgresql_database(empty_postgres,
                                                                          tmp_path):
    for command in READ_ONLY:
        done = run_here(*command, "--storage", empty_postgres, cwd=tmp_path, timeout=120)
        assert "Traceback" not in done.stderr, (command, done.stderr)
        if command == ("studies",):
            assert done.returncode == 0, done.stderr
            assert "(none yet)" in done.stdout
        else:
            assert done.returncode == 2, (command, done.stdout, done.stderr)
            lines = done.stderr.strip().splitlines()
            assert len(lines) == 1 and "no Optuna tables" in lines[0], (command, lines)
        assert _tables(empty_postgres) == [], command
    assert not (tmp_path / "never.keras").exists()


def test_read_only_commands_create_no_sqlite_file(tmp_path):
    for command in READ_ONLY:
        done = run_here(*command, "--storage", f"sqlite:///{tmp_path / 'absent.db'}",
                        cwd=tmp_path, timeout=120)
        assert "Traceback" not in done.stderr, (command, done.stderr)
        assert done.returncode == (0 if command == ("studies",) else 2), (command,
                                                                          done.stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_the_python_api_opens_for_reading_without_creating(tmp_path):
    import hpo

    with pytest.raises(NoStudies):
        hpo.load_study("demo", f"sqlite:///{tmp_path / 'absent.db'}")
    assert not (tmp_path / "absent.db").exists()


@pytest.mark.parametrize("url", ["sqlite:///:memory:", "sqlite://",
                                 "sqlite:///file::memory:?cache=shared",
                                 "sqlite:///file:db1?mode=memory&cache=shared&uri=true"])
def test_an_sqlite_database_in_memory_is_refused_before_anything(url, tmp_path):
    with pytest.raises(StorageError, match="in memory"):
        open_storage(url)
    done = run_here("run", "--study", "demo", "--storage", url, cwd=tmp_path, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "in memory" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


class _SilentServer:
    """Accepts TCP connections on 127.0.0.1 and never says a word."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
                self._held.append(conn)
            except OSError:
                continue

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for conn in self._held:
            conn.close()
        self._sock.close()


def test_a_server_that_never_answers_fails_within_the_connect_timeout(tmp_path):
    server = _SilentServer()
    try:
        url = f"postgresql://postgres@127.0.0.1:{server.port}/x"
        started = time.monotonic()
        done = run_here("run", "--study", "demo", "--storage", url, "--connect-timeout", "3",
                        cwd=tmp_path, timeout=120)
        took = time.monotonic() - started
    finally:
        server.close()
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "connecting to postgresql://postgres@127.0.0.1" in done.stderr  # said while waiting
    error = [line for line in done.stderr.splitlines() if line.startswith("hpo: error:")]
    assert len(error) == 1 and "did not answer within 3 s" in error[0], done.stderr
    assert "--connect-timeout" in error[0]
    assert took < 60, took  # bounded (before: 131 s of silence); a loose bound, not a timing


def test_a_connect_timeout_out_of_range_is_refused(tmp_path):
    done = run_here("run", "--study", "demo", "--connect-timeout", "0", cwd=tmp_path,
                    timeout=120)
    assert done.returncode == 2 and "--connect-timeout" in done.stderr, done.stderr
    assert not (tmp_path / "hpo.db").exists()


def _downgrade(url: str) -> None:
    """Moves the schema's recorded version one migration back, as an older Optuna left it."""
    from alembic.script import ScriptDirectory

    stock = optuna.storages.RDBStorage(url, skip_compatibility_check=True)
    scripts = ScriptDirectory.from_config(stock._version_manager._create_alembic_config())
    previous = scripts.get_revision(stock.get_current_version()).down_revision
    with stock.engine.begin() as connection:
        connection.execute(sqlalchemy.text("UPDATE alembic_version SET version_num = :v"),
                           {"v": previous})
    stock.engine.dispose()


def _unknown_version(url: str) -> None:
    """Records a schema version this Optuna does not know, as a newer Optuna would."""
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text("UPDATE alembic_version SET version_num = 'v99'"))
    engine.dispose()


@pytest.mark.parametrize("change, expected", [(_downgrade, "optuna storage upgrade"),
                                              (_unknown_version, "newer than the installed")])
def test_a_schema_the_installed_optuna_cannot_use_is_one_line_saying_what_to_do(
        tmp_path, change, expected):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    storage = open_storage(url, StorageOptions())
    optuna.create_study(study_name="old", storage=storage)
    close_storage(storage)
    change(url)
    before = Path(tmp_path / "old.db").read_bytes()
    for command in (("run", "--study", "demo"), ("studies",), ("trials", "old")):
        done = run_here(*command, "--storage", url, cwd=tmp_path, timeout=120)
        assert done.returncode == 2, (command, done.stderr)
        assert "Traceback" not in done.stderr
        error = [line for line in done.stderr.splitlines() if line.startswith("hpo: error:")]
        assert len(error) == 1 and expected in error[0], (command, done.stderr)
    assert Path(tmp_path / "old.db").read_bytes() == before  # nothing written


@pytest.fixture()
def limited_postgres(postgres_url):
    """A database owned by a new role that may hold at most 3 connections (superusers are
    not held to a CONNECTION LIMIT, so the test connects as that role)."""
    suffix = uuid.uuid4().hex[:8]
    role, name = f"hpo_limited_{suffix}", f"hpo_limited_{suffix}"
    admin = sqlalchemy.create_engine(postgres_url, isolation_level="AUTOCOMMIT",
                                     poolclass=sqlalchemy.pool.NullPool)
    with admin.connect() as connection:
        connection.execute(sqlalchemy.text(f'CREATE ROLE "{role}" LOGIN CONNECTION LIMIT 3'))
        connection.execute(sqlalchemy.text(f'CREATE DATABASE "{name}" OWNER "{role}"'))
    try:
        yield sqlalchemy.engine.make_url(postgres_url).set(
            username=role, database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            connection.execute(sqlalchemy.text(f'DROP ROLE IF EXISTS "{role}"'))
        admin.dispose()


@pytest.mark.postgres
def test_a_connection_refused_as_one_too_many_is_waited_out_at_open(limited_postgres, caplog):
    """"too many connections" at open is load, not a bad URL: hpo waits (one line) and opens
    once a connection is free; a wrong database name still fails at once."""
    import logging

    holder = sqlalchemy.create_engine(limited_postgres, poolclass=sqlalchemy.pool.NullPool)
    held = [holder.connect() for _ in range(3)]  # the role's three connections
    release = threading.Timer(3.0, lambda: [c.close() for c in held])
    release.start()
    started = time.monotonic()
    try:
        with caplog.at_level(logging.WARNING, logger="hpo"):
            storage = open_storage(limited_postgres, StorageOptions(outage_timeout=60))
        waited = time.monotonic() - started
        optuna.create_study(study_name="limited", storage=storage)
        close_storage(storage)
    finally:
        release.join()
        holder.dispose()
    assert waited >= 2.5, waited  # it did wait for the held connections
    said = [r.getMessage() for r in caplog.records if "refuses new connections" in r.getMessage()]
    assert len(said) == 1, said
    wrong = sqlalchemy.engine.make_url(limited_postgres).set(database="no_such_db_hpo")
    started = time.monotonic()
    with pytest.raises(StorageError, match="does not exist"):
        open_storage(wrong.render_as_string(hide_password=False),
                     StorageOptions(outage_timeout=60))
    assert time.monotonic() - started < 30


@pytest.mark.postgres
def test_connections_refused_for_longer_than_the_outage_timeout_end_in_one_line(
        limited_postgres):
    holder = sqlalchemy.create_engine(limited_postgres, poolclass=sqlalchemy.pool.NullPool)
    held = [holder.connect() for _ in range(3)]
    try:
        with pytest.raises(StorageError, match="max_connections"):
            open_storage(limited_postgres, StorageOptions(outage_timeout=2))
    finally:
        for connection in held:
            connection.close()
        holder.dispose()


@pytest.mark.postgres
def test_connections_cut_while_the_storage_opens_are_waited_out(postgres_url, caplog):
    """A server that cuts the connections of an opening worker (a restart, a failover,
    ``pg_terminate_backend``: the URL is right) is ridden out as an outage, one line saying
    so, as a running worker rides one out; before, the worker ended with "cannot open
    storage ... AdminShutdown". Here every connection to a new, empty database is cut for
    its first two seconds, while hpo creates the schema."""
    import logging

    name = f"hpo_cut_{uuid.uuid4().hex[:8]}"
    admin = sqlalchemy.create_engine(postgres_url, isolation_level="AUTOCOMMIT",
                                     poolclass=sqlalchemy.pool.NullPool)
    with admin.connect() as connection:
        connection.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    url = sqlalchemy.engine.make_url(postgres_url).set(database=name).render_as_string(
        hide_password=False)
    cut = []
    stop = threading.Event()

    def cutting() -> None:
        with admin.connect() as connection:
            ends = time.monotonic() + 2.0
            while time.monotonic() < ends and not stop.is_set():
                cut.extend(connection.execute(sqlalchemy.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :d AND pid <> pg_backend_pid()"), {"d": name}).all())
                time.sleep(0.005)

    cutter = threading.Thread(target=cutting)
    try:
        cutter.start()
        time.sleep(0.05)
        with caplog.at_level(logging.WARNING, logger="hpo"):
            storage = open_storage(url, StorageOptions(outage_timeout=60))
        optuna.create_study(study_name="cut", storage=storage)
        close_storage(storage)
    finally:
        stop.set()
        cutter.join()
        with admin.connect() as connection:
            connection.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    assert cut  # connections were cut while it opened
    said = [r.getMessage() for r in caplog.records if "cut the connection" in r.getMessage()]
    assert len(said) == 1, said
    assert not [r for r in caplog.records if "no answer yet" in r.getMessage()]  # it did
