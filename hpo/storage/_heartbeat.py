"""A running trial's heartbeat, recorded from a thread that survives database errors.

Optuna's own heartbeat thread stops for good on the first database error (optuna#4994), and
the live trial is later failed as stale. This one logs the error and keeps beating, so a
database outage costs nothing (hpo's storage itself also retries through one:
:mod:`hpo.storage._resilient`).
"""

from __future__ import annotations

import logging
import threading
from types import TracebackType

import optuna

from hpo.storage._contract import Heartbeats, heartbeats, hpo_storage
from hpo.storage._optuna import storage_of, trial_id

__all__ = ["Heartbeat", "StaleTrialRetry"]

_log = logging.getLogger(__name__)
_JOIN_TIMEOUT_S = 5.0


class Heartbeat:
    """Records a heartbeat for ``trial_id`` every ``interval`` seconds while in a ``with``.

    Does nothing on a storage without heartbeats (journal files).

    Args:
        storage: The study's storage.
        trial_id: The running trial's id.
    """

    def __init__(self, storage: optuna.storages.BaseStorage, trial_id: int) -> None:
        self._storage = storage
        self._trial_id = trial_id
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors = 0

    def _beat(self, beating: Heartbeats, interval: int) -> None:
        import sqlalchemy.exc

        from hpo.errors import StorageError

        while True:
            try:
                beating.record_heartbeat(self._trial_id)
            except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError,
                    StorageError) as exc:
                # Optuna wraps a database error in StorageInternalError; hpo's storage
                # retries through an outage and raises StorageError when it outlasts the
                # timeout. Either way: keep beating, the trial is alive.
                self.errors += 1
                _log.warning("heartbeat of trial id %d failed (%s); retrying",
                             self._trial_id, exc.__class__.__name__)
                if self._stop.wait(timeout=min(interval, 2)):
                    return
                continue
            if self._stop.wait(timeout=interval):
                return

    def __enter__(self) -> "Heartbeat":
        beating = heartbeats(self._storage)
        interval = None if beating is None else beating.get_heartbeat_interval()
        if beating is not None and interval is not None:
            self._thread = threading.Thread(target=self._beat, args=(beating, interval),
                                            daemon=True,
                                            name=f"hpo-heartbeat-{self._trial_id}")
            self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        if self._thread is not None:
            # A beat may be waiting out a database outage (hpo's storage retries it): do not
            # hold up the end of the trial, or Ctrl-C, for it; the thread is a daemon and
            # stops after that beat.
            self._thread.join(timeout=_JOIN_TIMEOUT_S)


class StaleTrialRetry:
    """Optuna's ``RetryHeartbeatStaleTrialCallback``, noting the numbers of the trials it
    was called for: the stale-trial callback of hpo's storage, for Optuna's own
    ``fail_stale_trials`` (``Study.optimize`` on an hpo storage). hpo's reaper
    (:func:`hpo.study.reap_dead_trials`) fails stale trials itself, judging each by its own
    worker's recorded heartbeat interval, and re-queues them the same way."""

    def __init__(self, max_retry: int) -> None:
        self._retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
        self._failed: list[int] = []

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self._failed.append(trial.number)
        hpo = hpo_storage(storage_of(study))
        if hpo is not None:  # its dead worker's next write would have carried them away
            hpo.forget_tokens(trial_id(trial))
        self._retry(study, trial)

    def drain(self) -> list[int]:
        """The trials failed as stale since the last call."""
        failed, self._failed = self._failed, []
        return failed
