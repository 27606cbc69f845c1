"""A worker's own trials, read back without a query.

Optuna reads a trial whole from the database three times around each trial a worker runs:
``Trial.__init__`` right after ``ask`` created or claimed it, and ``Study.tell`` before and
after its write of the end. Each read is six statements and a transaction on an RDB storage
(the trial, then its values, parameters, user and system attributes and intermediate
values): 18 of the 51 statements of a random trial, and 3 of its 14 transactions (issue 16).
Yet the worker wrote every one of those rows itself, through this same storage object.

:class:`TrialMirror` keeps a copy of each trial the worker created or claimed, brought up to
date by each write that the storage has committed (write-through: the database is written
first, the copy after), and serves ``get_trial`` of those trials from it. What makes the copy
exact: an unfinished trial is written only by the worker that runs it, except that another
worker may fail it as stale (a late heartbeat). Every write of Optuna's and hpo's checks the
trial's state in its own transaction, so the first write after that raises
``UpdateFinishedTrialError``, and the copy is dropped then: reads go to the database again.
A finished trial never changes (Optuna refuses every write to it), so its copy stays exact;
the last few are kept for ``tell``'s read of the trial it has just ended.

Only the process that holds the storage object sees the copies: a pickled storage (another
process) starts without them, and reads the database.
"""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict
from datetime import datetime
from typing import Any, Callable, Sequence, TypeVar

from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

__all__ = ["TrialMirror"]

_T = TypeVar("_T")

#: Finished trials kept after their end (tell reads the trial it has just ended once).
_FINISHED_KEPT = 8


class TrialMirror:
    """Copies of this worker's trials, kept exact by the writes it commits (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._trials: OrderedDict[int, FrozenTrial] = OrderedDict()
        self._waiting: dict[int, FrozenTrial] = {}

    def get(self, trial_id: int) -> FrozenTrial | None:
        """A copy of the trial as stored, or None when it is not mirrored."""
        with self._lock:
            trial = self._trials.get(trial_id)
            return None if trial is None else copy.deepcopy(trial)

    def hold(self, trial: FrozenTrial) -> None:
        """Mirrors ``trial``, which this worker has just created (as it was stored)."""
        with self._lock:
            self._trials[trial._trial_id] = copy.deepcopy(trial)
            self._trim()

    def saw_waiting(self, trials: Sequence[FrozenTrial]) -> None:
        """The WAITING trials of the latest read that could include them (``ask`` reads them,
        then claims one under the study lock): what a claimed trial is, besides its start."""
        with self._lock:
            self._waiting = {t._trial_id: t for t in trials if t.state == TrialState.WAITING}

    def claimed(self, trial_id: int, started: datetime) -> None:
        """This worker moved WAITING trial ``trial_id`` to RUNNING at ``started``: mirrored
        when it was among the WAITING trials last read (no one writes a WAITING trial but to
        claim or fail it, and either changes its state, which the claim checked)."""
        with self._lock:
            seen = self._waiting.pop(trial_id, None)
            if seen is None:
                return
            trial = copy.deepcopy(seen)
            trial.state = TrialState.RUNNING
            trial.datetime_start = started
            self._trials[trial_id] = trial
            self._trim()

    def forget(self, trial_id: int) -> None:
        """Reads of ``trial_id`` go to the database from now on."""
        with self._lock:
            self._trials.pop(trial_id, None)

    def write(self, trial_id: int, store: Callable[[], _T],
              change: Callable[[FrozenTrial], None]) -> _T:
        """Calls ``store()`` (a committed write of ``trial_id``); once it returns, applies
        ``change`` to the copy. A write that raised (the trial failed under this worker, an
        outage past its timeout, a bad value) drops the copy: the database is the truth."""
        stored = False
        try:
            result = store()
            stored = True
        finally:
            with self._lock:
                trial = self._trials.get(trial_id)
                if trial is not None:
                    if stored and not trial.state.is_finished():
                        change(trial)
                        self._trim()
                    elif not stored:
                        del self._trials[trial_id]
        return result

    def _trim(self) -> None:
        finished = [k for k, t in self._trials.items() if t.state.is_finished()]
        for key in finished[:max(0, len(finished) - _FINISHED_KEPT)]:
            del self._trials[key]


def param_set(name: str, value_internal: float, distribution: BaseDistribution
              ) -> Callable[[FrozenTrial], None]:
    """The change to a trial's copy of ``set_trial_param``."""

    def change(trial: FrozenTrial) -> None:
        trial.params = {**trial.params, name: distribution.to_external_repr(value_internal)}
        trial.distributions = {**trial.distributions, name: distribution}

    return change


def user_attrs_set(attrs: dict[str, Any]) -> Callable[[FrozenTrial], None]:
    """The change of ``set_trial_user_attr(s)``."""

    def change(trial: FrozenTrial) -> None:
        trial.user_attrs = {**trial.user_attrs, **copy.deepcopy(attrs)}

    return change


def system_attr_set(key: str, value: Any) -> Callable[[FrozenTrial], None]:
    """The change of ``set_trial_system_attr``."""

    def change(trial: FrozenTrial) -> None:
        trial.system_attrs = {**trial.system_attrs, key: copy.deepcopy(value)}

    return change


def intermediate_value_set(step: int, value: float) -> Callable[[FrozenTrial], None]:
    """The change of ``set_trial_intermediate_value``."""

    def change(trial: FrozenTrial) -> None:
        trial.intermediate_values = {**trial.intermediate_values, step: float(value)}

    return change


def finished(state: TrialState, values: Sequence[float] | None, completed: datetime,
             user_attrs: dict[str, Any]) -> Callable[[FrozenTrial], None]:
    """The change of the write that ends a trial (with its last ``user_attrs``)."""

    def change(trial: FrozenTrial) -> None:
        user_attrs_set(user_attrs)(trial)
        if values is not None:
            trial.values = [float(v) for v in values]
        trial.state = state
        trial.datetime_complete = completed

    return change
