"""Storage URL -> Optuna storage, with heartbeats, retries of lost trials, masked passwords.

* ``sqlite:///path.db`` (the default, ``sqlite:///hpo.db`` in the working folder): one worker.
* ``postgresql://user:password@host/db`` (or ``mysql://``): many workers, many hosts.
* ``journal:///path/to/file.log``: Optuna's JournalStorage on a shared file system, where no
  database server is possible (no heartbeats: use ``hpo reap`` after a crash).

A password in a URL is never printed or logged: every message uses :func:`mask_url`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import time
import warnings
from dataclasses import dataclass
from typing import Iterator

import optuna

from hpo.errors import StorageError
from hpo.storage._heartbeat import StaleTrialRetry
from hpo.storage._optuna import unwrap_storage
from hpo.storage._resilient import DEFAULT_OUTAGE_TIMEOUT, ResilientRDBStorage

__all__ = ["DEFAULT_STORAGE", "STATE_INDEX", "StorageOptions", "mask_url", "is_sqlite",
           "open_storage", "close_storage"]

_log = logging.getLogger("hpo.storage")
DEFAULT_STORAGE = "sqlite:///hpo.db"
_SCHEMA_LOCK = 0x68706F5F736368  # "hpo_sch": the advisory lock around schema creation


@dataclass(frozen=True)
class StorageOptions:
    """Crash-safety settings of an RDB storage.

    Attributes:
        heartbeat_interval: Seconds between a running trial's heartbeats.
        grace_period: Seconds without a heartbeat after which a trial is stale (FAIL).
        max_retry: How many times a stale trial is re-queued with the same parameters.
        outage_timeout: Seconds a storage call keeps retrying while the database is
            unreachable (a restart, a failover, a network cut) before the worker gives up.
    """

    heartbeat_interval: int = 60
    grace_period: int = 180
    max_retry: int = 1
    outage_timeout: float = DEFAULT_OUTAGE_TIMEOUT


#: user:password@ as SQLAlchemy's make_url reads it: the user name has no ':' or '/' (it may
#: be empty or hold an '@'), the password runs to the next '@' (it may hold a '/').
_USERINFO = re.compile(r"(://[^:/]*:)([^@]*)@")


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    return _USERINFO.sub(r"\1***@", url)


def is_sqlite(url: str) -> bool:
    """Whether ``url`` names an SQLite database."""
    return url.startswith("sqlite:")


def _scrub(text: str, url: str) -> str:
    """Removes the password of ``url`` from ``text`` (a driver's message): every occurrence
    of a password of 4 characters or more; a shorter one where it stands alone (not inside
    a word, which masking would garble: "p" in "psycopg")."""
    match = _USERINFO.search(url)
    if match and match.group(2):
        secret = match.group(2)
        if len(secret) >= 4:
            return text.replace(secret, "***")
        return re.sub(rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])", "***", text)
    return text


def _masked(url: str, text: str) -> str:
    """``text`` (a driver's message) without any password, that of ``url`` included."""
    return _scrub(mask_url(text), url)


def _explain(exc: Exception, url: str) -> str:
    text = _scrub(str(exc).strip().splitlines()[0] if str(exc).strip() else "", url)
    lowered = str(exc).lower()
    if "password authentication failed" in lowered or "access denied" in lowered:
        return "authentication failed: check the user name and password in $storage"
    if "does not exist" in lowered and "database" in lowered:
        return f"{text}; create the database first (e.g. createdb) or fix its name"
    if "could not connect" in lowered or "connection refused" in lowered or \
            "could not translate host name" in lowered or "timeout" in lowered:
        return f"the server is unreachable ({text}); check host, port and that it is running"
    if "unable to open database file" in lowered:
        return "cannot open the SQLite file: check that its folder exists and is writable"
    return text


#: Times a storage is opened again after a concurrent client won the race to create the
#: schema (each try after a short, growing pause: 0.05 s, 0.1 s, ... at most 2 s).
_SCHEMA_RACE_TRIES = 8


def _lost_schema_race(exc: Exception) -> bool:
    """Whether ``exc`` is PostgreSQL refusing a ``CREATE TABLE`` / ``CREATE TYPE`` / ``CREATE
    INDEX`` because a concurrent client (a stock Optuna process, which takes no lock) just
    created the same object (optuna#1092): unique violations in the catalogue
    (``pg_type_typname_nsp_index``) and duplicate tables / objects; on SQLite, "table ...
    already exists" or a second schema version row, when processes open a new file at the
    same instant."""
    import sqlite3

    orig = getattr(exc, "orig", None)
    if isinstance(orig, sqlite3.OperationalError):
        return "already exists" in str(orig)
    if isinstance(orig, sqlite3.IntegrityError):
        return "alembic_version" in str(orig) or "version_info" in str(orig)
    code = getattr(orig, "sqlstate", None)
    if code in ("42P07", "42710"):  # duplicate_table, duplicate_object
        return True
    text = str(exc)
    return code == "23505" and ("pg_type_typname_nsp_index" in text or
                                "pg_class_relname_nsp_index" in text or
                                "already exists" in text)


@contextlib.contextmanager
def _schema_lock(url: str) -> Iterator[None]:
    """Serialises schema creation on PostgreSQL: workers started at the same instant on an
    empty database would otherwise race to create Optuna's tables (optuna#1092)."""
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    if not url.startswith("postgresql"):
        yield
        return
    engine = sqlalchemy.create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": _SCHEMA_LOCK})
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"),
                             {"k": _SCHEMA_LOCK})
    finally:
        engine.dispose()


#: hpo's one addition to Optuna's schema: an index of the trials by study and state. Optuna
#: reads a study's WAITING trials at every ``ask`` and hpo its RUNNING ones at every
#: reaping; without it each read goes through all of the study's trials (8 ms a read at
#: 100,000 trials on SQLite, 0.0 ms with it).
STATE_INDEX = "ix_hpo_trials_study_id_state"


def _ensure_state_index(storage: ResilientRDBStorage, url: str) -> None:
    """Creates :data:`STATE_INDEX` unless it exists (under the schema lock on PostgreSQL;
    ``IF NOT EXISTS`` semantics elsewhere). A database user that may not create it (a
    read-only role, a table owned by another user) still works, without it."""
    import sqlalchemy
    import sqlalchemy.exc

    table = sqlalchemy.Table("trials", sqlalchemy.MetaData(), sqlalchemy.Column("study_id"),
                             sqlalchemy.Column("state"))
    index = sqlalchemy.Index(STATE_INDEX, table.c.study_id, table.c.state)
    try:
        with storage.engine.begin() as connection:
            index.create(connection, checkfirst=True)
    except sqlalchemy.exc.DBAPIError as exc:
        try:  # another client (a stock Optuna one takes no lock) may have just made it
            if sqlalchemy.inspect(storage.engine).has_index("trials", STATE_INDEX):
                return
        except sqlalchemy.exc.DBAPIError:
            pass  # the reason worth saying is the first one
        _log.info("the trials are read without hpo's index %s (%s): claims and reaping "
                  "read every trial of a study", STATE_INDEX, _explain(exc, url))


def close_storage(storage: optuna.storages.BaseStorage) -> None:
    """Returns a storage's database connections to the server (disposes its engine)."""
    inner = unwrap_storage(storage)
    engine = getattr(inner, "engine", None)
    if engine is not None:
        engine.dispose()


def open_storage(url: str, options: StorageOptions | None = None) -> optuna.storages.BaseStorage:
    """Opens the Optuna storage at ``url``.

    Args:
        url: A SQLAlchemy database URL, or ``journal:///path``.
        options: Heartbeat and retry settings (RDB storages only).

    Raises:
        StorageError: Unknown scheme, unreachable server, wrong password, unusable file.
    """
    import sqlalchemy.exc

    options = options or StorageOptions()
    if url.startswith("journal://"):
        path = url[len("journal://"):]
        if not path:
            raise StorageError(f"journal storage {url!r} names no file; expected "
                               "journal:///path/to/study.log")
        parent = os.path.dirname(os.path.abspath(path))
        if os.path.isdir(path) or path.endswith("/"):
            raise StorageError(f"journal storage {url!r} names a folder; expected a file, "
                               "e.g. journal:///path/to/study.log")
        if not os.path.isdir(parent):
            raise StorageError(f"journal storage folder {parent!r} does not exist; create it "
                               "or choose another path")
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        try:
            return JournalStorage(JournalFileBackend(path))
        except (OSError, ValueError) as exc:  # a NUL in the path, a file it may not open
            raise StorageError(f"cannot open journal storage {url!r}: {exc}; expected a "
                               "writable file, e.g. journal:///path/to/study.log") from None
    if "://" not in url:
        raise StorageError(
            f"storage {mask_url(url)!r} is not a URL; expected sqlite:///file.db, "
            "postgresql://user:password@host/db or journal:///file.log"
        )
    engine_kwargs: dict[str, object] = {"pool_pre_ping": True}
    if is_sqlite(url):
        engine_kwargs = {"connect_args": {"timeout": 60}}
    else:
        # Per worker process at most pool_size + max_overflow = 4 connections (the heartbeat
        # thread, the study lock and the trial's own writes), plus one short-lived
        # connection while the schema is checked: N workers hold at most 4N + N.
        engine_kwargs.update(pool_size=2, max_overflow=2, pool_recycle=1800)
    def create() -> ResilientRDBStorage:
        with warnings.catch_warnings(), _schema_lock(url):
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage = ResilientRDBStorage(
                url,
                outage_timeout=options.outage_timeout,
                mask=functools.partial(_masked, url),  # picklable, as storages must be
                engine_kwargs=engine_kwargs,
                heartbeat_interval=options.heartbeat_interval,
                grace_period=options.grace_period,
                heartbeat_stale_trial_callback=StaleTrialRetry(options.max_retry),
            )
            _ensure_state_index(storage, url)
            return storage

    try:
        for attempt in range(_SCHEMA_RACE_TRIES):
            try:
                return create()  # RDBStorage checks the schema's version as it opens
            except sqlalchemy.exc.DBAPIError as exc:
                if not _lost_schema_race(exc) or attempt == _SCHEMA_RACE_TRIES - 1:
                    raise
                _log.debug("another client created the schema at the same moment (%s); "
                           "opening again", exc.__class__.__name__)
                time.sleep(min(2.0, 0.05 * 2 ** attempt))
        raise AssertionError("unreachable")  # the loop returns or raises
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError) as exc:
        raise StorageError(f"cannot open storage {mask_url(url)}: {_explain(exc, url)}") \
            from None
