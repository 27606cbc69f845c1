"""What the layers above (``study/``, ``trial/``, ``execution/``) may ask of a study's storage
beyond Optuna's ``BaseStorage``, as typed protocols, and the invariants hpo's storage keeps.

Every storage a study runs on is an Optuna storage; hpo's own RDB storage
(:class:`hpo.storage.ResilientRDBStorage`) adds what :class:`HpoStorage` lists. A caller
gets it with :func:`hpo_storage`, which answers None for a storage without it (a journal
file, Optuna's in-memory storage); heartbeats are :class:`Heartbeats` (:func:`heartbeats`),
which Optuna's RDB storage (and hpo's) has and a journal file has not. No caller probes a
storage with ``getattr``, and none reads ``Study._storage`` itself
(:func:`hpo.storage.storage_of` is the one place).

Invariants of hpo's storage (tests/test_storage_contract.py, test_resilient_storage.py,
test_trial_mirror.py and test_late_results.py hold them):

* **Creation and claim tokens.** Creating a trial writes a unique token with it (system
  attribute ``hpo:create_token``); a retried creation after a lost acknowledgement finds
  the trial by its token instead of creating a second one. Taking a WAITING trial writes a
  claim token in the transaction that makes it RUNNING, so that only one worker wins it
  and a retried claim knows its own win. Tokens are hidden from every reader
  (``get_trial`` and friends strip them) and are removed by the trial's next write once
  acknowledged; :meth:`HpoStorage.forget_tokens` removes them at once from a trial whose
  worker died before that write (the reaper calls it after failing the trial).
* **The worker's trial mirror.** A worker reads the trials it runs from what it wrote (a
  :class:`hpo.storage._mirror.TrialMirror`), not from the database: every write of the
  worker is applied to its mirror once the database acknowledged it, and a trial leaves
  the mirror when it is finished. Other workers' trials are always read from the database.
* **End-of-trial records.** ``set_trial_user_attrs(..., with_end=True)`` holds a trial's
  last records in this process and writes them in the transaction that ends the trial (its
  state change): one transaction fewer per trial. If that end finds the trial already
  finished (another worker failed it as stale), the records are not written and wait in
  :meth:`HpoStorage.take_withheld_user_attrs` for the caller, who keeps them with a late
  result. A worker killed between the two loses them with the trial, which is failed and
  re-run as any trial of a dead worker.
* **Outages.** Every call rides out a lost database for up to ``outage_timeout`` seconds
  (:meth:`HpoStorage.call_with_retries` for hpo's own queries);
  :meth:`HpoStorage.recovered_within` tells the reaper not to believe heartbeats that went
  stale during an outage.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, TypeVar, runtime_checkable

import optuna
from optuna.storages._cached_storage import _CachedStorage  # Optuna internal

__all__ = ["HpoStorage", "Heartbeats", "hpo_storage", "heartbeats", "unwrap_storage"]

_T = TypeVar("_T")


@runtime_checkable
class Heartbeats(Protocol):
    """A storage that records trial heartbeats (Optuna's ``BaseHeartbeat``: its RDB storage
    and the cache around it)."""

    def get_heartbeat_interval(self) -> int | None:
        """Seconds between a running trial's heartbeats; None: no heartbeats."""

    def record_heartbeat(self, trial_id: int) -> None:
        """Records that ``trial_id`` is alive now."""


@runtime_checkable
class HpoStorage(Protocol):
    """What hpo's RDB storage adds to Optuna's, for the layers above ``storage/``."""

    def set_trial_user_attrs(self, trial_id: int, attrs: dict[str, Any], *,
                             with_end: bool = False) -> None:
        """Sets several user attributes in one transaction; ``with_end``: held for the
        transaction that ends the trial (see the module's invariants)."""

    def take_withheld_user_attrs(self, trial_id: int) -> dict[str, Any]:
        """The end-of-trial records that found the trial finished, taken once."""

    def forget_tokens(self, trial_id: int) -> None:
        """Removes hpo's creation and claim tokens from the trial now."""

    def recovered_within(self, seconds: float) -> bool:
        """Whether the storage is in an outage or left one less than ``seconds`` ago."""

    def call_with_retries(self, name: str, attempt: Callable[[bool], _T]) -> _T:
        """``attempt(retry)`` through database outages (``retry``: not the first try)."""


def unwrap_storage(storage: Any) -> Any:
    """The RDB storage under the ``_CachedStorage`` an ``optuna.Study`` wraps it in."""
    return storage._backend if isinstance(storage, _CachedStorage) else storage  # internal


def hpo_storage(storage: optuna.storages.BaseStorage) -> HpoStorage | None:
    """hpo's storage under ``storage`` (a study's storage, cached or not), or None for a
    storage without what :class:`HpoStorage` lists."""
    backend = unwrap_storage(storage)
    return backend if isinstance(backend, HpoStorage) else None


def heartbeats(storage: optuna.storages.BaseStorage) -> Heartbeats | None:
    """``storage`` as a storage with heartbeats that are on, else None (a journal file, or
    heartbeats off)."""
    if isinstance(storage, Heartbeats) and storage.get_heartbeat_interval() is not None:
        return storage
    return None
