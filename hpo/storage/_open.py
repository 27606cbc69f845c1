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
import math
import os
import random
import re
import time
import warnings
from dataclasses import dataclass
from typing import Callable, Iterator

import optuna

from hpo.config import DEFAULT_STORAGE, StorageSettings
from hpo.errors import NoStudies, StorageError
from hpo.storage._heartbeat import StaleTrialRetry
from hpo.storage._locks import host_turn
from hpo.storage._optuna import unwrap_storage
from hpo.storage._resilient import (
    DEFAULT_OUTAGE_TIMEOUT,
    ResilientRDBStorage,
    is_connection_limit,
    is_server_cut,
)
from hpo.storage._url import check_storage_url

__all__ = ["DEFAULT_STORAGE", "DEFAULT_CONNECT_TIMEOUT", "POOLED_ENV", "STATE_INDEX", "StorageOptions",
           "mask_url", "is_sqlite", "open_storage", "close_storage"]

_log = logging.getLogger(__name__)
_SCHEMA_LOCK = 0x68706F5F736368  # "hpo_sch": the advisory lock around schema creation
#: The environment variable that tells a worker its PostgreSQL URL leads to a connection
#: pooler in transaction mode (the private PgBouncer of ``hpo run``, or a lab's): "1" turns
#: psycopg's prepared statements off, which such a pooler cannot keep for a client.
POOLED_ENV = "HPO_POOLED"
#: Seconds a connection to a database server may take before the open fails (libpq's
#: ``connect_timeout``): a server that accepts the TCP connection and never answers would
#: otherwise hold the worker silently for minutes.
DEFAULT_CONNECT_TIMEOUT = 10.0
#: Seconds an open may take before hpo says it is still connecting.
_SLOW_CONNECT_NOTICE = 2.0


@dataclass(frozen=True)
class StorageOptions:
    """Crash-safety settings of an RDB storage.

    Attributes:
        heartbeat_interval: Seconds between a running trial's heartbeats.
        grace_period: Seconds without a heartbeat after which a trial is stale (FAIL).
        max_retry: How many times a stale trial is re-queued with the same parameters.
        outage_timeout: Seconds a storage call keeps retrying while the database is
            unreachable (a restart, a failover, a network cut) before the worker gives up.
        connect_timeout: Seconds one connection to a database server may take to be
            answered (PostgreSQL, MySQL); the open fails with one line after it.
    """

    heartbeat_interval: int = 60
    grace_period: int = 180
    max_retry: int = 1
    outage_timeout: float = DEFAULT_OUTAGE_TIMEOUT
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT

    @classmethod
    def of(cls, settings: StorageSettings) -> StorageOptions:
        """The options of a run's storage section, as it is (the one place that reads it)."""
        return cls(heartbeat_interval=settings.heartbeat, grace_period=settings.grace_period,
                   outage_timeout=settings.outage_timeout,
                   connect_timeout=settings.connect_timeout)


#: user:password@ as SQLAlchemy's make_url reads it: the user name has no ':' or '/' (it may
#: be empty or hold an '@'), the password runs to the next '@' (it may hold a '/').
_USERINFO = re.compile(r"(://[^:/]*:)([^@]*)@")
#: libpq's other place for it: ``postgresql://host/db?user=u&password=p``.
_QUERY_PASSWORD = re.compile(r"([?&]password=)([^&#\s]*)", re.IGNORECASE)


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (in its user part or its query)."""
    return _QUERY_PASSWORD.sub(r"\1***", _USERINFO.sub(r"\1***@", url))


def is_sqlite(url: str) -> bool:
    """Whether ``url`` names an SQLite database."""
    return url.startswith("sqlite:")


def _scrub(text: str, url: str) -> str:
    """Removes the password of ``url`` from ``text`` (a driver's message): every occurrence
    of a password of 4 characters or more; a shorter one where it stands alone (not inside
    a word, which masking would garble: "p" in "psycopg")."""
    match = _USERINFO.search(url) or _QUERY_PASSWORD.search(url)
    if match and match.group(2):
        secret = match.group(2)
        if len(secret) >= 4:
            return text.replace(secret, "***")
        return re.sub(rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])", "***", text)
    return text


def _masked(url: str, text: str) -> str:
    """``text`` (a driver's message) without any password, that of ``url`` included."""
    return _scrub(mask_url(text), url)


def _explain(exc: BaseException, url: str, connect_timeout: float | None = None) -> str:
    text = _scrub(str(exc).strip().splitlines()[0] if str(exc).strip() else "", url)
    lowered = str(exc).lower()
    if "connection timeout expired" in lowered or "timed out" in lowered:
        within = f" within {connect_timeout:g} s" if connect_timeout else ""
        return (f"the server did not answer{within} ({text}); check host and port (is a "
                "database server listening there?), or allow it longer with $connect_timeout")
    if "password authentication failed" in lowered or "access denied" in lowered:
        return "authentication failed: check the user name and password in $storage"
    if "does not exist" in lowered and "database" in lowered:
        return f"{text}; create the database first (e.g. createdb) or fix its name"
    if "could not connect" in lowered or "connection refused" in lowered or \
            "could not translate host name" in lowered or "timeout" in lowered:
        return f"the server is unreachable ({text}); check host, port and that it is running"
    if "unable to open database file" in lowered:
        return "cannot open the SQLite file: check that its folder exists and is writable"
    if "file is not a database" in lowered or "malformed" in lowered:
        return (f"{text}: the file is not an SQLite database hpo can read; point $storage at "
                "another file (or restore this one from a backup)")
    if "no module named" in lowered or "failed to import db access module" in lowered:
        return (f"{text}; install the database driver for this URL (psycopg for "
                "postgresql://, PyMySQL for mysql+pymysql://)")
    if "can't load plugin" in lowered:
        return (f"{text}; expected sqlite:///file.db, postgresql://user:password@host/db "
                "or mysql+pymysql://user:password@host/db")
    return text


def _memory_database(url: str) -> bool:
    """Whether ``url`` names an SQLite database held in memory: gone when its process ends,
    and a different, empty one in every worker."""
    import sqlalchemy.engine
    import sqlalchemy.exc

    try:
        parsed = sqlalchemy.engine.make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError):  # said when the storage is opened
        return False
    if parsed.get_backend_name() != "sqlite":
        return False
    database = parsed.database or ""
    return database in ("", ":memory:") or database.startswith("file::memory:") or \
        "mode=memory" in database or parsed.query.get("mode") == "memory"


def _schema_problem(exc: RuntimeError, url: str) -> StorageError | None:
    """Optuna's refusal of a schema made by another Optuna version, as one line saying what
    to do (None for any other RuntimeError)."""
    text = str(exc)
    if "compatible with the table schema" not in text:
        return None
    made = re.search(r"set up by optuna ([^)\s]+)", text)
    made_by = made.group(1) if made else "another version"
    if "storage upgrade" in text:
        return StorageError(
            f"the database {mask_url(url)} was set up by Optuna {made_by}, whose schema the "
            f"installed Optuna {optuna.__version__} cannot use as it is; back it up, then "
            f"run 'optuna storage upgrade --storage URL' (or install Optuna {made_by})")
    return StorageError(
        f"the database {mask_url(url)} has a schema newer than the installed Optuna "
        f"{optuna.__version__} knows (set up by Optuna {made_by}); install that Optuna "
        "version or newer in this environment")


def _has_schema(url: str, engine_kwargs: dict[str, object], *, index: bool = False) -> bool:
    """Whether the database at ``url`` holds Optuna's tables (read, nothing created); with
    ``index``, hpo's :data:`STATE_INDEX` too."""
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    kwargs = {k: v for k, v in engine_kwargs.items()
              if k not in ("pool_size", "max_overflow", "pool_recycle", "pool_pre_ping")}
    engine = sqlalchemy.create_engine(url, poolclass=NullPool, **kwargs)
    try:
        inspector = sqlalchemy.inspect(engine)
        return inspector.has_table("studies") and inspector.has_table("version_info") and \
            (not index or inspector.has_index("trials", STATE_INDEX))
    finally:
        engine.dispose()


@contextlib.contextmanager
def _said_when_slow(url: str, timeout: float) -> Iterator[Callable[[], None]]:
    """Says "connecting to URL" once if opening takes more than a moment (a server that is
    slow to answer, or not answering: the connect timeout then ends it); gives the call
    that silences it (the server answered: a wait that follows says why itself)."""
    import threading

    timer = threading.Timer(_SLOW_CONNECT_NOTICE, _log.warning,
                            ("connecting to %s: no answer yet (giving up after %g s)",
                             mask_url(url), timeout))
    timer.daemon = True
    timer.start()
    try:
        yield timer.cancel
    finally:
        timer.cancel()


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
def _schema_lock(url: str, connect_args: dict[str, object] | None = None) -> Iterator[None]:
    """Serialises schema creation on PostgreSQL: workers started at the same instant on an
    empty database would otherwise race to create Optuna's tables (optuna#1092).

    A transaction-scoped advisory lock, held by a transaction left open on a connection of
    its own while the schema is made on others: it works through a pooler in transaction
    mode (PgBouncer), where a session's lock would stay with a server connection other
    clients then use. It is taken in this host's turn to open (:func:`_open_turn`)."""
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    if not url.startswith("postgresql"):
        yield
        return
    engine = sqlalchemy.create_engine(url, poolclass=NullPool,
                                      connect_args=connect_args or {})
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_xact_lock(:k)"),
                         {"k": _SCHEMA_LOCK})
            try:
                yield
            finally:
                conn.rollback()  # ends the transaction: the lock goes with it
    finally:
        engine.dispose()


def _open_turn(url: str) -> contextlib.AbstractContextManager[None]:
    """On PostgreSQL, this host's turn to open a storage (:func:`hpo.storage._locks.host_turn`):
    Optuna's open holds a transaction on one connection while it takes a second (the schema
    version check), and the schema lock a third. Through a pool of a few server connections
    (PgBouncer in transaction mode), processes opening at once could each hold one and wait
    for another for ever; one opener per host at a time cannot. Taken before the "no answer
    yet" notice is timed: waiting for this host's other workers is not a server that does
    not answer."""
    import sqlalchemy.engine

    if not url.startswith("postgresql"):
        return contextlib.nullcontext()
    return host_turn(sqlalchemy.engine.make_url(url), "open")


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


def _pooled(url: str) -> bool:
    """Whether ``url`` leads through a pooler in transaction mode (:data:`POOLED_ENV`) with
    psycopg 3, whose prepared statements must then be turned off."""
    import sqlalchemy.engine
    import sqlalchemy.exc

    if os.environ.get(POOLED_ENV, "") not in ("1", "true", "yes"):
        return False
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError):  # said when the storage is opened
        return False
    return parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() == "psycopg"


def close_storage(storage: optuna.storages.BaseStorage) -> None:
    """Returns a storage's database connections to the server (disposes its engine)."""
    inner = unwrap_storage(storage)
    engine = getattr(inner, "engine", None)
    if engine is not None:
        engine.dispose()


def open_storage(url: str, options: StorageOptions | None = None, *,
                 create: bool = True) -> optuna.storages.BaseStorage:
    """Opens the Optuna storage at ``url``.

    Args:
        url: A SQLAlchemy database URL, or ``journal:///path``.
        options: Heartbeat and retry settings (RDB storages only).
        create: Create Optuna's schema (and hpo's index) if the database has none. False for
            the commands that only read: they never write tables, or a file, into someone's
            database.

    Raises:
        StorageError: Unknown scheme, unreachable server, wrong password, unusable file, an
            in-memory SQLite database (lost with its process), a schema made by another
            Optuna version.
        NoStudies: ``create`` is False and the database holds no Optuna schema.
    """
    import sqlalchemy.exc

    options = options or StorageOptions()
    check_storage_url(url)
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
        from optuna.storages.journal import JournalFileBackend

        from hpo.storage._notes import NotedJournalStorage

        try:
            return NotedJournalStorage(JournalFileBackend(path))
        except (OSError, ValueError) as exc:  # a NUL in the path, a file it may not open
            raise StorageError(f"cannot open journal storage {url!r}: {exc}; expected a "
                               "writable file, e.g. journal:///path/to/study.log") from None
    if "://" not in url:
        raise StorageError(
            f"storage {mask_url(url)!r} is not a URL; expected sqlite:///file.db, "
            "postgresql://user:password@host/db or journal:///file.log"
        )
    if _memory_database(url):
        raise StorageError(
            f"storage {mask_url(url)!r} is an SQLite database in memory: every worker would "
            "get its own empty one and every result would be lost when it ends; expected a "
            "file, e.g. sqlite:///hpo.db")
    if not create and is_sqlite(url):
        path = url.split("sqlite:///", 1)[-1].split("?", 1)[0]
        if path and not os.path.isfile(path):
            raise NoStudies(f"no study database at {path!r}; run a study first ('hpo run "
                            "--study demo') or pass $storage")
    engine_kwargs: dict[str, object] = {"pool_pre_ping": True}
    connect_args: dict[str, object] | None = None
    if is_sqlite(url):
        connect_args = {"timeout": 60}
        engine_kwargs = {"connect_args": connect_args}
    else:
        if url.startswith(("postgresql", "mysql")):
            # libpq and PyMySQL take whole seconds (libpq: at least 2)
            connect_args = {"connect_timeout": max(2, math.ceil(options.connect_timeout))}
            if _pooled(url):
                connect_args["prepare_threshold"] = None
            engine_kwargs["connect_args"] = connect_args
        # Per worker process at most pool_size + max_overflow = 4 connections (the heartbeat
        # thread, the study lock and the trial's own writes), plus one short-lived
        # connection while the schema is checked: N workers hold at most 4N + N.
        engine_kwargs.update(pool_size=2, max_overflow=2, pool_recycle=1800)

    def make() -> ResilientRDBStorage:
        # On PostgreSQL a schema already made (the usual case: every worker after the first,
        # every worker of 'hpo run') is only read: no lock, no connection held waiting for
        # one while others claim (through a pool of a few connections, that could deadlock)
        made = create and url.startswith("postgresql") and \
            _has_schema(url, engine_kwargs, index=True)
        lock: contextlib.AbstractContextManager[None] = \
            _schema_lock(url, connect_args) if create and not made else contextlib.nullcontext()
        with warnings.catch_warnings(), lock:
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if not create and not _has_schema(url, engine_kwargs):
                raise NoStudies(f"no Optuna studies in {mask_url(url)}: the database holds "
                                "no Optuna tables; run a study there first ('hpo run --study "
                                "NAME --storage URL') or check $storage")
            storage = ResilientRDBStorage(
                url,
                outage_timeout=options.outage_timeout,
                mask=functools.partial(_masked, url),  # picklable, as storages must be
                engine_kwargs=engine_kwargs,
                heartbeat_interval=options.heartbeat_interval,
                grace_period=options.grace_period,
                heartbeat_stale_trial_callback=StaleTrialRetry(options.max_retry),
                skip_table_creation=not create or made,
            )
            if create and not made:
                _ensure_state_index(storage, url)
            return storage

    try:
        slow: contextlib.AbstractContextManager[Callable[[], None]] = \
            contextlib.nullcontext(lambda: None) if is_sqlite(url) else \
            _said_when_slow(url, options.connect_timeout)  # a server that does not answer
        with _open_turn(url), slow as answered:
            return _open_with_retries(make, url, options.outage_timeout, answered)
    except RuntimeError as exc:  # Optuna's schema version check
        problem = _schema_problem(exc, url)
        if problem is None:
            raise
        raise problem from None
    except optuna.exceptions.StorageInternalError as exc:  # Optuna's wrapper of a driver error
        cause = exc.__cause__ if exc.__cause__ is not None else exc
        raise StorageError(f"cannot open storage {mask_url(url)}: "
                           f"{_explain(cause, url, options.connect_timeout)}") from None
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError) as exc:
        raise StorageError(f"cannot open storage {mask_url(url)}: "
                           f"{_explain(exc, url, options.connect_timeout)}") from None


def _open_with_retries(make: Callable[[], ResilientRDBStorage], url: str,
                       outage_timeout: float,
                       answered: Callable[[], None] = lambda: None) -> ResilientRDBStorage:
    """``make()``, called again while it loses the schema race to a concurrent client, while
    the server refuses a connection for being one too many (load), or while it cuts the
    connections or cannot take one (a restart, a failover, ``pg_terminate_backend``): both
    waited out for up to ``outage_timeout`` seconds with backoff, one line saying so, as a
    running worker rides out an outage. A wrong host, password or database still fails at
    once."""
    import sqlalchemy.exc

    attempt = 0
    deadline: float | None = None
    delay = 0.25
    while True:
        try:
            return make()  # RDBStorage checks the schema's version as it opens
        except (sqlalchemy.exc.DBAPIError, optuna.exceptions.StorageInternalError) as exc:
            limit = is_connection_limit(exc)
            if limit or is_server_cut(exc):
                now = time.monotonic()
                if deadline is None:
                    deadline = now + outage_timeout
                    answered()  # the server answered: no "no answer yet" line
                    _log.warning(
                        "the database at %s %s; waiting for up to %.0f s", mask_url(url),
                        "refuses new connections: it serves as many clients as it allows"
                        if limit else "cut the connection while hpo opened the storage (a "
                        "restart, a failover, pg_terminate_backend)", outage_timeout)
                if now >= deadline:
                    if not limit:
                        raise StorageError(
                            f"the database at {mask_url(url)} cut every connection for "
                            f"{outage_timeout:.0f} s while hpo opened the storage; expected "
                            "a server that keeps a connection open; fix: wait until it is "
                            "up again (or raise $outage_timeout)") from None
                    raise StorageError(
                        f"the database at {mask_url(url)} refused every new connection for "
                        f"{outage_timeout:.0f} s: it serves as many clients as it allows; "
                        "run fewer workers, or raise the server's max_connections (or the "
                        "role's / database's CONNECTION LIMIT)") from None
                time.sleep(min(delay, max(0.0, deadline - now)) * (0.5 + random.random() / 2))
                delay = min(delay * 2, 5.0)
                continue
            attempt += 1
            if not isinstance(exc, sqlalchemy.exc.DBAPIError) or not _lost_schema_race(exc) \
                    or attempt >= _SCHEMA_RACE_TRIES:
                raise
            _log.debug("another client created the schema at the same moment (%s); "
                       "opening again", exc.__class__.__name__)
            time.sleep(min(2.0, 0.05 * 2 ** (attempt - 1)))
