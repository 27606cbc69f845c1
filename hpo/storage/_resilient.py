"""An Optuna RDBStorage that rides out database outages instead of losing the trial.

Optuna's RDBStorage gives up on the first lost connection: a database restarted, failed over
or cut off for ten seconds raises ``StorageInternalError`` in the middle of a trial, the
worker dies and hours of GPU training are thrown away. :class:`ResilientRDBStorage` retries
every storage call that failed because the server could not be reached, with exponential
backoff, for up to ``outage_timeout`` seconds; training threads simply wait on their next
write. One warning says when an outage starts and one line when it ends.

A write that failed while its COMMIT was in flight may nevertheless have been stored (a
"lost acknowledgement"). Retrying it must not store it twice, nor turn its success into an
error; the check sits in the transaction that writes, so that every retry makes it, hpo's
and Optuna's own (``RDBStorage._create_new_trial`` retries a failed commit up to five times
by itself, beneath hpo's retries):

* creating a trial carries a unique token (system attribute ``hpo:create_token``, written
  with the trial); every try after the first looks for a trial with that token, in its own
  transaction under the study's row lock, and returns it instead of creating another;
* creating a study carries such a token too (a study system attribute, removed once the
  creation is acknowledged); a retry that finds the study's name taken by a study with its
  token returns that study instead of raising DuplicatedStudyError;
* deleting a study, retried, takes a study already gone as deleted (not a KeyError);
* a state change retried after a lost acknowledgement is taken as done when the stored trial
  already has that state and those values;
* every other write is an upsert (attributes, intermediate values, heartbeats) or is
  rejected as a duplicate by a unique key that Optuna ignores (parameters).

Only the first contact with the database (opening the storage) is not retried, so a wrong
URL or password still fails at once.
"""

from __future__ import annotations

import copy
import functools
import logging
import random
import threading
import time
import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, Container, Sequence, TypeVar

import optuna
import sqlalchemy.exc
from optuna.distributions import BaseDistribution
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState

from hpo.errors import StorageError

if TYPE_CHECKING:
    from optuna.study._frozen import FrozenStudy  # Optuna internal: BaseStorage's type
from hpo.storage import _mirror
from hpo.storage._mirror import TrialMirror
from hpo.storage._notes import TrialNote, render_note
from hpo.storage._optuna import (
    claim_waiting_trial,
    create_study_once,
    delete_study_once,
    delete_study_system_attrs,
    delete_trial_system_attrs,
    finish_trial,
    insert_study_system_attrs,
    trial_with_system_attr_in,
    write_trial_user_attrs,
)

__all__ = ["ResilientRDBStorage", "is_connection_error", "is_connection_limit",
           "permanent_problem", "DEFAULT_OUTAGE_TIMEOUT"]

_log = logging.getLogger(__name__)
_T = TypeVar("_T")

#: Seconds a worker waits for an unreachable database before it gives up.
DEFAULT_OUTAGE_TIMEOUT = 600.0
_TOKEN = "hpo:create_token"
_CLAIM = "hpo:claim_token"  # who moved a WAITING trial to RUNNING, until acknowledged
_HIDDEN = (_TOKEN, _CLAIM)
_FIRST_DELAY = 0.25
_MAX_DELAY = 5.0


# (text in the driver's message, or SQLSTATE) -> what to do; errors a retry cannot cure, which
# share OperationalError with a lost connection but must fail at once, not after the timeout.
_PERMANENT = (
    (("readonly database", "read-only transaction", "25006"),
     "the study database is read-only; make the file (and its folder) writable, or point "
     "$storage at a writable database"),
    (("database or disk is full", "disk is full", "53100", "no space left"),
     "the disk of the study database is full; free space, then resume with the same command"),
    (("file is not a database", "database disk image is malformed", "XX001", "XX002"),
     "the study database file is damaged or is not a database; restore it from a copy, or "
     "point $storage at another file"),
    (("no such table", "42P01"),
     "the study database lacks Optuna's tables (a file from something else, or a half-made "
     "schema); point $storage at an Optuna database or a new file"),
)


def permanent_problem(exc: BaseException) -> str | None:
    """What to do about ``exc`` when it is a database error that no retry cures (a read-only
    or full database, a damaged file, a missing table); None otherwise."""
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and len(chain) < 20:
        chain.append(seen)
        orig = getattr(seen, "orig", None)
        if isinstance(orig, BaseException):
            chain.append(orig)
        seen = seen.__cause__
    for error in chain:
        codes = {str(getattr(error, "sqlstate", "") or ""), str(getattr(error, "pgcode", "") or "")}
        text = str(error).lower()
        for needles, advice in _PERMANENT:
            if any(n.lower() in text or n in codes for n in needles):
                return advice
    return None


#: A server refusing a connection for being one too many (PostgreSQL's too_many_connections,
#: SQLSTATE 53300: max_connections, a role's or a database's CONNECTION LIMIT, the slots
#: reserved for superusers; MySQL's 1040): load, waited out like an outage, not a bad URL.
_CONNECTION_LIMIT = ("53300", "too many clients", "too many connections",
                     "remaining connection slots are reserved", "(1040,")


def _said_in_causes(exc: BaseException, codes: tuple[str, ...],
                    said: Callable[[str], bool]) -> bool:
    """Whether ``exc``, one of its causes or the driver error each wraps carries a SQLSTATE
    of ``codes``, or a message (lower case) for which ``said`` is true."""
    seen: BaseException | None = exc
    for _ in range(20):
        if seen is None:
            return False
        for error in (seen, getattr(seen, "orig", None)):
            if error is None:
                continue
            if str(getattr(error, "sqlstate", "") or "") in codes or said(str(error).lower()):
                return True
        seen = seen.__cause__
    return False


def is_connection_limit(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is the server refusing one connection too many."""
    return _said_in_causes(exc, _CONNECTION_LIMIT[:1],
                           lambda text: any(n in text for n in _CONNECTION_LIMIT[1:]))


#: SQLSTATEs of a PostgreSQL server that cut a connection or cannot take one now: a restart
#: or failover (admin_shutdown, crash_shutdown, cannot_connect_now), or
#: ``pg_terminate_backend``. The server was reached: the URL is right.
_SERVER_CUT = ("57P01", "57P02", "57P03")
#: What the driver says of a connection lost in the middle of a statement, when the server's
#: own message did not arrive first (no SQLSTATE): the connection had been made, so the
#: URL is right (the same words while connecting, "connection to server at ... failed",
#: may be a wrong port: those still fail at once).
_CUT_MIDWAY = ("server closed the connection unexpectedly",
               "ssl connection has been closed unexpectedly")


def is_server_cut(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is a PostgreSQL server that cut an open
    connection or cannot take one now (restarting, shutting down, ``pg_terminate_backend``)."""
    return _said_in_causes(exc, _SERVER_CUT, lambda text: any(
        words in text for words in _CUT_MIDWAY) and "connection to server" not in text)


def is_connection_error(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) means the database could not be reached.

    Covers a refused or dropped connection, a server that closed it (restart, failover,
    ``pg_terminate_backend``), a connection the pool invalidated, a connection lost inside a
    transaction and used again before its rollback (``PendingRollbackError``: Optuna's
    ``RDBStorage._get_trials`` queries again in the same session after an
    ``OperationalError`` of its trials query, "Falling back to a slower alternative"; its
    session block rolls back before the error leaves it, so a retry starts afresh), and the
    transient ``OperationalError`` family (deadlocks, "database is locked") that a retry
    also cures.
    """
    if permanent_problem(exc) is not None:
        return False
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError,
                             sqlalchemy.exc.PendingRollbackError)):
            return True
        if isinstance(seen, sqlalchemy.exc.DBAPIError) and seen.connection_invalidated:
            return True
        seen = seen.__cause__
    return False


def _retried(method: Callable[..., _T]) -> Callable[..., _T]:
    """Wraps one RDBStorage method so that a connection error retries it."""

    @functools.wraps(method)
    def wrapper(self: "ResilientRDBStorage", *args: Any, **kwargs: Any) -> _T:
        return self.call_with_retries(method.__name__, lambda retry: method(self, *args, **kwargs))

    return wrapper


def _without_tokens(trial: FrozenTrial) -> FrozenTrial:
    """``trial`` without hpo's creation and claim tokens (which leave the stored trial with
    its next write)."""
    if any(key in trial.system_attrs for key in _HIDDEN):
        trial.system_attrs = {k: v for k, v in trial.system_attrs.items() if k not in _HIDDEN}
    return trial


class ResilientRDBStorage(RDBStorage):
    """:class:`optuna.storages.RDBStorage` that retries calls through database outages.

    It overrides and calls private methods of RDBStorage (``_create_new_trial``,
    ``_get_prepared_new_trial``, ``_set_trial_param``, ``_get_trials``, ...): Optuna
    internals, listed in ``hpo.storage._optuna.OPTUNA_INTERNALS`` and checked by a test.

    It is a plain RDBStorage to Optuna (``optuna.create_study`` wraps it in its cache as
    usual) and to the database (same schema): only the behaviour on a lost connection
    differs.

    Args:
        url: SQLAlchemy database URL.
        outage_timeout: Seconds to keep retrying one call while the database is
            unreachable; past that, :class:`hpo.errors.StorageError` is raised.
        mask: Turns a message into one without the URL's password (for logs).
        **kwargs: Passed to :class:`optuna.storages.RDBStorage`.
    """

    def __init__(self, url: str, *, outage_timeout: float = DEFAULT_OUTAGE_TIMEOUT,
                 mask: Callable[[str], str] = str, **kwargs: Any) -> None:
        self.outage_timeout = outage_timeout
        self._mask = mask
        self._outage_lock = threading.Lock()
        self._outage_since: float | None = None
        self._recovered_at: float | None = None
        #: Connection errors ridden out so far by this storage object.
        self.retried_errors = 0
        self._spent_lock = threading.Lock()
        self._spent: dict[int, tuple[str, ...]] = {}  # trial id -> acknowledged tokens
        self._mirror = TrialMirror()  # this worker's trials, read without a query
        self._at_end: dict[int, dict[str, Any]] = {}  # records written with a trial's end
        self._tried: set[str] = set()  # creation tokens whose first try has begun
        #: Renders the dashboard note written with each trial's end (hpo.storage._notes);
        #: None: no notes.
        self.trial_notes: TrialNote | None = None
        self._stale: set[int] = set()  # trials found stale, for their notes
        super().__init__(url, **kwargs)

    def __getstate__(self) -> dict[Any, Any]:
        state = super().__getstate__()
        state.pop("_outage_lock", None)
        state.pop("_spent_lock", None)
        state.pop("_mirror", None)  # another process writes trials this one cannot see
        state["_spent"] = {}
        state["_at_end"] = {}
        state["_tried"] = set()
        state["_stale"] = set()
        return state

    def __setstate__(self, state: dict[Any, Any]) -> None:
        super().__setstate__(state)
        self._outage_lock = threading.Lock()
        self._spent_lock = threading.Lock()
        self._mirror = TrialMirror()

    # -- the retry loop ----------------------------------------------------------------

    def call_with_retries(self, name: str, attempt: Callable[[bool], _T]) -> _T:
        """Calls ``attempt(retry)`` until it succeeds or the outage outlasts the timeout.

        ``retry`` is True on every call after one that failed, so that a non-idempotent
        write can first check whether its earlier try was stored after all.
        """
        deadline: float | None = None
        delay = _FIRST_DELAY
        retry = False
        while True:
            try:
                result = attempt(retry)
            except (optuna.exceptions.StorageInternalError,
                    sqlalchemy.exc.SQLAlchemyError) as exc:
                advice = permanent_problem(exc)
                if advice is not None:
                    raise StorageError(f"{advice} ({self._reason(exc)})") from None
                if not is_connection_error(exc):
                    raise
                now = time.monotonic()
                deadline = deadline if deadline is not None else now + self.outage_timeout
                self._outage_started(name, exc)
                if now >= deadline:
                    raise StorageError(
                        f"the study database has been unreachable for "
                        f"{self.outage_timeout:.0f} s ({self._reason(exc)}); check the server, "
                        "then resume with the same command (the trial in flight is re-run)"
                    ) from None
                self.retried_errors += 1
                time.sleep(min(delay, max(0.0, deadline - now)) * (0.5 + random.random() / 2))
                delay = min(delay * 2, _MAX_DELAY)
                retry = True
                continue
            if retry:
                self._outage_ended()
            return result

    def recovered_within(self, seconds: float) -> bool:
        """Whether this storage is in an outage or came out of one less than ``seconds``
        ago. Every worker's heartbeat failed during that outage: a stale heartbeat then is
        no sign that its worker died (the database restart scenario failed a live trial
        as stale this way, and its grid point ran twice)."""
        with self._outage_lock:
            if self._outage_since is not None:
                return True
            return self._recovered_at is not None and \
                time.monotonic() - self._recovered_at < seconds

    def _reason(self, exc: BaseException) -> str:
        cause: BaseException = exc
        while cause.__cause__ is not None:
            cause = cause.__cause__
        text = str(cause).strip().splitlines()
        return self._mask(f"{cause.__class__.__name__}: {text[0] if text else ''}")[:300]

    def _outage_started(self, name: str, exc: BaseException) -> None:
        with self._outage_lock:
            if self._outage_since is not None:
                return
            self._outage_since = time.monotonic()
        if is_connection_limit(exc):
            _log.warning("the study database refuses new connections: it serves as many "
                         "clients as it allows (%s, in %s); waiting for a free one for up to "
                         "%.0f s", self._reason(exc), name, self.outage_timeout)
            return
        _log.warning("the study database is unreachable (%s, in %s); retrying for up to "
                     "%.0f s", self._reason(exc), name, self.outage_timeout)

    def _outage_ended(self) -> None:
        with self._outage_lock:
            since, self._outage_since = self._outage_since, None
            if since is not None:
                self._recovered_at = time.monotonic()
        if since is not None:
            _log.warning("the study database is reachable again after %.1f s; carrying on",
                         time.monotonic() - since)

    # -- writes that must not be stored twice ------------------------------------------

    def _create_new_trial(self, study_id: int,
                          template_trial: FrozenTrial | None = None) -> FrozenTrial:
        token = uuid.uuid4().hex
        if template_trial is None:
            template = FrozenTrial(
                number=-1, state=TrialState.RUNNING, value=None, values=None,
                datetime_start=datetime.now(), datetime_complete=None, params={},
                distributions={}, user_attrs={}, system_attrs={}, intermediate_values={},
                trial_id=-1)
        else:
            template = copy.copy(template_trial)
        template.system_attrs = {**template.system_attrs, _TOKEN: token}

        # Optuna's own loop retries a failed commit (up to five times) before hpo's retries
        # see anything: each of its tries, and each of hpo's, goes through
        # _get_prepared_new_trial below, which looks for the token first.
        try:
            trial = self.call_with_retries("create_new_trial", lambda retry:
                                           RDBStorage._create_new_trial(self, study_id, template))
        finally:
            with self._spent_lock:
                self._tried.discard(token)
        # The token has done its work once the creation is acknowledged: it leaves a RUNNING
        # trial with the trial's next write of its own (its first records or its end: no
        # transaction of its own), and no read through this storage shows it meanwhile, so
        # the trial is what stock RDBStorage would store (Optuna's StorageTestCase,
        # trials_dataframe(), the dashboard, FrozenTrial equality).
        if template.state == TrialState.RUNNING:  # this worker's: its next write carries it
            self._spend(trial._trial_id, (_TOKEN,))
            self._mirror.hold(_without_tokens(copy.deepcopy(trial)))
        else:  # finished, or WAITING for whichever worker, if any, claims it
            self.forget_tokens(trial._trial_id)
        if trial.state.is_finished():  # made finished (a recovered result): its note now
            note = render_note(self.trial_notes, _without_tokens(copy.deepcopy(trial)))
            if note:
                self.call_with_retries("insert_study_system_attrs", lambda retry:
                                       insert_study_system_attrs(self, study_id, note))
        return _without_tokens(trial)

    def _get_prepared_new_trial(self, study_id: int, template_trial: FrozenTrial | None,
                                session: Any) -> Any:
        """RDBStorage's insert of a new trial (in the transaction that holds the study's row
        lock), which first, on every try after the first of one creation, looks for the
        trial that an earlier try stored although its answer was lost, and returns it
        instead (Optuna's ``TrialModel``): nothing is written then, and Optuna's
        ``_create_new_trial`` makes its FrozenTrial from the template as for a new one."""
        token = None if template_trial is None else template_trial.system_attrs.get(_TOKEN)
        if token is not None:
            with self._spent_lock:
                retry = token in self._tried
                self._tried.add(token)
            if retry:
                stored = trial_with_system_attr_in(session, study_id, _TOKEN, token)
                if stored is not None:
                    return stored
        return RDBStorage._get_prepared_new_trial(self, study_id, template_trial, session)

    def forget_tokens(self, trial_id: int) -> None:
        """Removes hpo's tokens from a trial now, whoever wrote them (a trial made finished,
        or one whose worker died before its next write carried them away)."""
        self.call_with_retries("forget_tokens", lambda retry: delete_trial_system_attrs(
            self, trial_id, _HIDDEN))
        self._removed(trial_id, _HIDDEN)

    def _spend(self, trial_id: int, keys: tuple[str, ...]) -> None:
        with self._spent_lock:
            self._spent[trial_id] = tuple(dict.fromkeys(self._spent.get(trial_id, ()) + keys))

    def _spent_tokens(self, trial_id: int) -> tuple[str, ...]:
        with self._spent_lock:
            return self._spent.get(trial_id, ())

    def _removed(self, trial_id: int, keys: tuple[str, ...]) -> None:
        """``keys`` left the trial's row in a committed transaction."""
        with self._spent_lock:
            left = tuple(k for k in self._spent.get(trial_id, ()) if k not in keys)
            if left:
                self._spent[trial_id] = left
            else:
                self._spent.pop(trial_id, None)

    def _claim(self, trial_id: int) -> bool:
        """WAITING -> RUNNING for this worker alone. A claim whose answer was lost is
        recognised by its token: RUNNING alone cannot tell this worker's claim from another
        worker's that came in between (say, after the study lock's connection dropped).
        The claim also removes the trial's creation token, whoever created it."""
        token = uuid.uuid4().hex
        drop = tuple(dict.fromkeys(self._spent_tokens(trial_id) + (_TOKEN,)))
        started = datetime.now()

        def attempt(retry: bool) -> bool:
            if retry and RDBStorage.get_trial(self, trial_id).system_attrs.get(_CLAIM) == token:
                return True  # the earlier try was stored; its answer was lost
            return claim_waiting_trial(self, trial_id, _CLAIM, token, drop=drop,
                                       started=started)

        claimed = self.call_with_retries("set_trial_state_values", attempt)
        if claimed:  # acknowledged: the token leaves the trial with its next write
            self._removed(trial_id, drop)
            self._spend(trial_id, (_CLAIM,))
            self._mirror.claimed(trial_id, started)
        return claimed

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        return self._create_new_trial(study_id, template_trial)._trial_id

    def set_trial_state_values(self, trial_id: int, state: TrialState,
                               values: Sequence[float] | None = None) -> bool:
        if state == TrialState.RUNNING and values is None:
            return self._claim(trial_id)
        if not state.is_finished():  # RUNNING with values, WAITING: Optuna's own checks
            done = self.call_with_retries("set_trial_state_values", lambda retry:
                                          RDBStorage.set_trial_state_values(
                                              self, trial_id, state, values))
            # read from the database from now on: this worker's copy is not this state (a
            # trial re-queued is no longer this worker's; Optuna 4.9's StorageTestCase reads
            # the values of a trial set WAITING with values back)
            self._mirror.forget(trial_id)
            return done
        # The end of a trial: its state, values and end time, its last records, its
        # dashboard note and the removal of hpo's tokens still on it, in one transaction
        # (RDBStorage's own write, plus the records, the note and the tokens).
        spent = self._spent_tokens(trial_id)
        with self._spent_lock:
            ending = self._at_end.pop(trial_id, {})
        completed = datetime.now()
        note = self._note_of_end(trial_id, state, values, completed, ending)

        def attempt(retry: bool) -> bool:
            try:
                done = finish_trial(self, trial_id, state, values, completed, drop=spent,
                                    user_attrs=ending, study_attrs=note)
            except optuna.exceptions.UpdateFinishedTrialError:
                if retry and self._has_state(trial_id, state, values):
                    return True  # the earlier try was stored; its answer was lost
                raise
            return done or (retry and self._has_state(trial_id, state, values))

        try:
            done = self._mirror.write(
                trial_id, lambda: self.call_with_retries("set_trial_state_values", attempt),
                _mirror.finished(state, values, completed, ending))
        except optuna.exceptions.UpdateFinishedTrialError:
            with self._spent_lock:  # failed by another worker: its records were not written
                self._at_end[trial_id] = {**ending, **self._at_end.get(trial_id, {})}
            if spent:  # nor did the tokens leave with them
                self.forget_tokens(trial_id)
            raise
        if done:
            self._removed(trial_id, spent)
        else:
            self._mirror.forget(trial_id)
        return done

    def _note_of_end(self, trial_id: int, state: TrialState, values: Sequence[float] | None,
                     completed: datetime, ending: dict[str, Any]) -> dict[str, Any]:
        """The dashboard note of the trial as its end will leave it: this worker's copy of
        its own trial, or (a trial another worker ran: a reaped one) the trial read now."""
        with self._spent_lock:
            stale = trial_id in self._stale
            self._stale.discard(trial_id)
        if self.trial_notes is None:
            return {}
        trial = self._mirror.get(trial_id)
        if trial is None:
            trial = _without_tokens(self.call_with_retries(
                "get_trial", lambda retry: RDBStorage.get_trial(self, trial_id)))
            if trial.state.is_finished():  # the end will be refused: no note
                return {}
        _mirror.finished(state, values, completed, ending)(trial)
        return render_note(self.trial_notes, trial, stale and state == TrialState.FAIL)

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        """RDBStorage's, noting the trials for their notes (``fail_stale_trials`` fails
        each next)."""
        stale = self.call_with_retries("_get_stale_trial_ids", lambda retry:
                                       RDBStorage._get_stale_trial_ids(self, study_id))
        with self._spent_lock:
            self._stale.update(stale)
        return stale

    def _has_state(self, trial_id: int, state: TrialState,
                   values: Sequence[float] | None) -> bool:
        stored = RDBStorage.get_trial(self, trial_id)
        return stored.state == state and (values is None or stored.values == list(values))

    def set_trial_user_attrs(self, trial_id: int, attrs: dict[str, Any], *,
                             with_end: bool = False) -> None:
        """Sets several user attributes in one transaction (upserts: safe to repeat), and
        removes the trial's acknowledged tokens in the same one.

        ``with_end``: the trial's last records (its wall time, why it failed), held until
        the write that ends the trial and written in that transaction: one transaction a
        trial fewer. Held in this process only: a worker killed between the two loses them
        with the trial, which is failed and re-run as any trial of a dead worker is; a trial
        failed by another worker meanwhile leaves them to
        :meth:`take_withheld_user_attrs`.
        """
        if with_end:
            with self._spent_lock:
                self._at_end[trial_id] = {**self._at_end.get(trial_id, {}), **attrs}
            return
        spent = self._spent_tokens(trial_id)
        self._write(trial_id, "set_trial_user_attrs", lambda: write_trial_user_attrs(
            self, trial_id, attrs, drop=spent), _mirror.user_attrs_set(attrs))
        self._removed(trial_id, spent)

    def take_withheld_user_attrs(self, trial_id: int) -> dict[str, Any]:
        """The records held for the end of ``trial_id`` that were not written (the trial was
        failed by another worker first); forgotten here once taken."""
        with self._spent_lock:
            return self._at_end.pop(trial_id, {})

    def _write(self, trial_id: int, name: str, write: Callable[[], Any],
               change: Callable[[FrozenTrial], None]) -> Any:
        """``write()`` of trial ``trial_id`` through outages, then ``change`` to this
        worker's copy of the trial (:class:`TrialMirror`)."""
        return self._mirror.write(
            trial_id, lambda: self.call_with_retries(name, lambda retry: write()), change)

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._write(trial_id, "set_trial_user_attr", lambda: RDBStorage.set_trial_user_attr(
            self, trial_id, key, value), _mirror.user_attrs_set({key: value}))

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._write(trial_id, "set_trial_system_attr",
                    lambda: RDBStorage.set_trial_system_attr(self, trial_id, key, value),
                    _mirror.system_attr_set(key, value))

    def _set_trial_param(self, trial_id: int, param_name: str, param_value_internal: float,
                         distribution: BaseDistribution,
                         previous_distribution: BaseDistribution | None) -> None:
        self._write(trial_id, "set_trial_param", lambda: RDBStorage._set_trial_param(
            self, trial_id, param_name, param_value_internal, distribution,
            previous_distribution),
            _mirror.param_set(param_name, param_value_internal, distribution))

    def set_trial_intermediate_value(self, trial_id: int, step: int,
                                     intermediate_value: float) -> None:
        self._write(trial_id, "set_trial_intermediate_value",
                    lambda: RDBStorage.set_trial_intermediate_value(
                        self, trial_id, step, intermediate_value),
                    _mirror.intermediate_value_set(step, intermediate_value))

    # -- reads never show the tokens ----------------------------------------------------

    def get_trial(self, trial_id: int) -> FrozenTrial:
        mirrored = self._mirror.get(trial_id)
        if mirrored is not None:  # this worker's own trial: as its writes left it
            return mirrored
        return _without_tokens(self.call_with_retries(
            "get_trial", lambda retry: RDBStorage.get_trial(self, trial_id)))

    def _get_trials(self, study_id: int, states: Container[TrialState] | None,
                    *args: Any, **kwargs: Any) -> list[FrozenTrial]:
        trials = [_without_tokens(t) for t in self.call_with_retries(
            "_get_trials", lambda retry: RDBStorage._get_trials(self, study_id, states,
                                                                *args, **kwargs))]
        if states is None or TrialState.WAITING in states:  # what ask() may claim next
            self._mirror.saw_waiting(trials)
        return trials

    def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:
        attrs = self.call_with_retries(
            "get_study_system_attrs",
            lambda retry: RDBStorage.get_study_system_attrs(self, study_id))
        return {k: v for k, v in attrs.items() if k not in _HIDDEN}

    def get_all_studies(self) -> list[FrozenStudy]:
        studies = self.call_with_retries("get_all_studies",
                                         lambda retry: RDBStorage.get_all_studies(self))
        for study in studies:
            if _TOKEN in study.system_attrs:
                study.system_attrs = {k: v for k, v in study.system_attrs.items()
                                      if k not in _HIDDEN}
        return studies

    def get_trial_system_attrs(self, trial_id: int) -> dict[str, Any]:
        attrs = self.call_with_retries(
            "get_trial_system_attrs",
            lambda retry: RDBStorage.get_trial_system_attrs(self, trial_id))
        return {k: v for k, v in attrs.items() if k not in _HIDDEN}

    # -- studies -----------------------------------------------------------------------

    def create_new_study(self, directions: Sequence[optuna.study.StudyDirection],
                         study_name: str | None = None) -> int:
        """RDBStorage's, with a creation token written with the study: a retry after a lost
        acknowledgement returns the study its earlier try stored (not DuplicatedStudyError,
        nor a second study under another generated name: the name is chosen once, here).
        The token leaves the study once the creation is acknowledged."""
        from optuna.storages._base import DEFAULT_STUDY_NAME_PREFIX  # Optuna internal

        name = DEFAULT_STUDY_NAME_PREFIX + str(uuid.uuid4()) if study_name is None else study_name
        token = uuid.uuid4().hex
        created = self.call_with_retries("create_new_study", lambda retry: create_study_once(
            self, directions, name, _TOKEN, token, retry=retry))
        self.call_with_retries("create_new_study", lambda retry: delete_study_system_attrs(
            self, created, (_TOKEN,)))
        optuna.logging.get_logger("optuna.storages._rdb.storage").info(
            "A new study created in RDB with name: %s", name)
        return created

    def delete_study(self, study_id: int) -> None:
        """RDBStorage's; a retry after a lost acknowledgement finds the study gone and takes
        it as deleted (a KeyError only when the first try finds no such study)."""
        self.call_with_retries("delete_study", lambda retry: delete_study_once(
            self, study_id, retry=retry))

    # -- everything else is safe to repeat ---------------------------------------------

    set_study_user_attr = _retried(RDBStorage.set_study_user_attr)
    set_study_system_attr = _retried(RDBStorage.set_study_system_attr)
    get_study_id_from_name = _retried(RDBStorage.get_study_id_from_name)
    get_study_name_from_id = _retried(RDBStorage.get_study_name_from_id)
    get_study_directions = _retried(RDBStorage.get_study_directions)
    get_study_user_attrs = _retried(RDBStorage.get_study_user_attrs)
    get_trial_user_attrs = _retried(RDBStorage.get_trial_user_attrs)
    get_trial_param = _retried(RDBStorage.get_trial_param)
    get_trial_id_from_study_id_trial_number = _retried(
        RDBStorage.get_trial_id_from_study_id_trial_number)
    get_all_trials = _retried(RDBStorage.get_all_trials)
    get_best_trial = _retried(RDBStorage.get_best_trial)
    _get_best_trial_id = _retried(RDBStorage._get_best_trial_id)
    record_heartbeat = _retried(RDBStorage.record_heartbeat)


if TYPE_CHECKING:
    from hpo.storage._contract import Heartbeats, HpoStorage

    def _keeps_the_contract(storage: ResilientRDBStorage) -> tuple[HpoStorage, Heartbeats]:
        """mypy checks here that hpo's storage is what :mod:`hpo.storage._contract` says."""
        return storage, storage
