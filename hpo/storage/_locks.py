"""A study-wide lock across worker processes and hosts, held while a grid point is claimed.

* PostgreSQL: a transaction-scoped advisory lock (``pg_advisory_xact_lock``), across hosts,
  held by a transaction left open on a connection of its own while the claim runs on the
  storage's other connections (a session lock would not survive a pooler in transaction
  mode, PgBouncer's, which hands a server connection to another client between
  transactions). Before it, a worker takes its host's turn: an ``fcntl`` lock on a file in
  a per-user folder of the host's temporary folder, keyed by database and study, so that
  at most one worker per host waits in the database; through a pool of a few server
  connections, waiters would otherwise fill the pool while the holder waits for a
  connection to do its work;
* SQLite and journal files: an ``fcntl`` lock on a file beside the database (one host),
  removed when the lock is released;
* other databases: no cross-process lock; grid claiming then relies on row locks only and
  a warning says so.

Only the PostgreSQL lock can be lost while held: the server ends it with its connection (a
restart, ``pg_terminate_backend``, ``idle_in_transaction_session_timeout`` after a worker
was paused inside the block), and another worker may then take it while the block is still
writing. The block cannot be undone, but it is known: :class:`LockHold` says afterwards
whether the lock was held from the block's start to its end (its transaction was still
open when the block ended), so the caller can check what it wrote under a lock taken again.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import optuna

from hpo.errors import StorageError
from hpo.storage._optuna import journal_file, unwrap_storage
from hpo.storage._resilient import ResilientRDBStorage, is_connection_error

if TYPE_CHECKING:
    import sqlalchemy.engine

__all__ = ["LockHold", "study_lock", "host_turn"]

_log = logging.getLogger(__name__)


@dataclass
class LockHold:
    """What a :func:`study_lock` block learns of its lock once the block has ended.

    Attributes:
        lost: The lock ended before the block did: its database connection was cut while
            the block ran (read it after the ``with``). Another worker may have taken the
            lock meanwhile and done what the block did (claimed the same grid point, the
            run's last trial): the block's writes are to be checked under the lock again.
            Always False for the file locks, which end only with their process.
    """

    lost: bool = False


def _lock_key(study_name: str) -> int:
    """A signed 64-bit key for pg_advisory_lock, stable across hosts."""
    digest = hashlib.sha256(f"hpo:{study_name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _names(path: Path, fd: int) -> bool:
    """Whether ``path`` names the file open as ``fd`` now."""
    try:
        now = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino)


def _open_lock_file(path: Path) -> int:
    """The lock file, created if absent; read-only (``flock`` needs no more, so another
    user who can read it waits for it rather than failing), never through a symbolic link."""
    flags = os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
    try:
        return os.open(path, flags, 0o666)
    except OSError as exc:
        raise StorageError(
            f"received a lock file hpo cannot open: {path} ({exc.strerror}); expected a "
            "folder this user can create files in (hpo takes a study's lock there while a "
            "worker claims a grid point); fix: give this user write access to that folder, "
            "or remove what stands at that name") from None


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path``, a file that exists only while someone holds or
    waits for it: the holder removes it before unlocking, so nothing is left beside the
    database after a run. A waiter that then gets the lock of the removed file (or of one
    replaced meanwhile) sees that ``path`` no longer names it, and takes the lock of the
    file ``path`` names now: at most one process holds the lock of the current file. The
    path is made absolute first, so that a change of folder meanwhile changes nothing.
    Not reentrant: a process that takes a lock it holds (two study names whose files are
    the same, in a journal file every study's) waits for itself."""
    path = Path(os.path.abspath(path))
    while True:
        fd = _open_lock_file(path)
        current = False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            current = _names(path, fd)
        finally:
            if not current:  # removed or replaced while this process waited (or an error)
                os.close(fd)
        if current:
            break
    try:
        yield
    finally:
        try:
            if _names(path, fd):
                os.unlink(path)  # still held: a waiter on it tries again with a new file
        except OSError as exc:  # a folder that lets this user create but not remove
            _log.debug("lock file %s left in place (%s)", path, exc.strerror)
        finally:
            os.close(fd)  # releases the lock


def _own_folder(folder: Path) -> Path:
    """``folder``, created for this user alone if absent; refused when it is someone
    else's or others may write in it (the lock files in it would be theirs to replace)."""
    folder.mkdir(mode=0o700, exist_ok=True)
    found = os.lstat(folder)
    if (not stat.S_ISDIR(found.st_mode) or found.st_uid != os.getuid()
            or found.st_mode & 0o022):
        raise StorageError(
            f"received a folder for hpo's host-wide turns, {folder}, owned by user "
            f"{found.st_uid} with mode {stat.S_IMODE(found.st_mode):o}; expected a folder of "
            f"this user's own (user {os.getuid()}) that no one else can write in; fix: "
            "remove it, or point TMPDIR at a folder of your own")
    return folder


def host_turn(url: sqlalchemy.engine.URL, name: str) -> contextlib.AbstractContextManager[None]:
    """This host's turn to wait for the advisory lock ``name`` (a study's, the schema's) in
    the database at ``url``: an ``fcntl`` lock on a file of a per-user folder of the host's
    temporary folder (the same file for every process of this user on this host), so that
    at most one of them waits in the database (holding a server connection) at a time."""
    place = f"{url.host}:{url.port}:{url.query.get('host')}:{url.database}:{name}"
    folder = _own_folder(Path(tempfile.gettempdir()) / f"hpo-turns-{os.getuid()}")
    return _file_lock(folder / f"{hashlib.sha256(place.encode()).hexdigest()[:24]}.lock")


def _locked_connection(storage: optuna.storages.RDBStorage, key: int) -> Any:
    """A connection whose open transaction holds the advisory lock ``key``; waits out a
    database outage."""
    import sqlalchemy

    def attempt(retry: bool) -> Any:
        conn = storage.engine.connect()
        try:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})
        except sqlalchemy.exc.SQLAlchemyError:
            conn.close()
            raise
        return conn

    if isinstance(storage, ResilientRDBStorage):
        return storage.call_with_retries("study lock", attempt)
    return attempt(False)


@contextlib.contextmanager
def _advisory_lock(storage: optuna.storages.RDBStorage, key: int,
                   hold: LockHold) -> Iterator[None]:
    import sqlalchemy

    conn = _locked_connection(storage, key)
    try:
        yield
    finally:
        try:
            # Ends the lock's transaction, and the lock with it. Its success is the proof
            # that the lock was held throughout: the transaction that holds it was still
            # open after everything the block wrote.
            conn.rollback()
        except sqlalchemy.exc.SQLAlchemyError as exc:
            if not is_connection_error(exc):
                raise
            # The lock's connection was lost (the server restarted or cut it): the server
            # released the lock with it, maybe while the block still ran.
            hold.lost = True
            _log.warning("the study lock's database connection was lost while this worker "
                         "held it (%s): what it did under the lock is checked again",
                         exc.__class__.__name__)
        finally:
            conn.close()


@contextlib.contextmanager
def study_lock(storage: optuna.storages.BaseStorage, study_name: str) -> Iterator[LockHold]:
    """Holds the lock of ``study_name`` in ``storage`` for the ``with`` block; the
    :class:`LockHold` it gives says, once the block has ended, whether the lock was lost
    meanwhile. Not reentrant: do not nest two of them (on SQLite two names may share a
    file, on a journal file every name does, and the process would wait for itself)."""
    storage = unwrap_storage(storage)
    hold = LockHold()
    if isinstance(storage, optuna.storages.RDBStorage):
        url = storage.engine.url
        if url.get_backend_name() == "postgresql":
            with host_turn(url, f"study:{study_name}"), \
                    _advisory_lock(storage, _lock_key(study_name), hold):
                yield hold
            return
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            with _file_lock(Path(f"{url.database}.{_lock_key(study_name) & 0xFFFF:04x}.lock")):
                yield hold
            return
    journal = journal_file(storage)
    if journal:
        with _file_lock(Path(f"{journal}.hpo.lock")):
            yield hold
        return
    _log.debug("no cross-process lock for this storage; relying on row locks")
    yield hold
