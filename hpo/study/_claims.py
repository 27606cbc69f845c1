"""Grid claims whose cost follows what changed, not the size of the study or of the grid.

A worker claims its next grid point under the study lock. Done naively, every claim reads
every trial, recomputes which points are done, running and failed, rebuilds the list of
grid points and walks it from the first (issue 16: 168-249 ms per trial at 10k trials).
:class:`GridClaims` keeps that picture in the worker between claims and brings it up to
date with one query for what changed since the last claim: trials created since, and those
that were unfinished then (Optuna's own trial cache reads the same way), counted by state
and grid point in the database, not read whole (an hpo trial has ~25 attributes). Finished
trials never change, so each is counted once per process. The grid's points are listed
once, a point's key computed only when the cursor reaches it; the next never-started point
is found from a cursor that only moves forward (a point, once started, stays started).

The rules of a claim: a WAITING trial first; then a point whose every trial failed, while
it has failed at most ``retries`` times (a trial given up before it ran, ``hpo:not_run``,
is no failure); then the next point never started.

A point never started is not queued as a WAITING trial for ``Study.ask`` to find and claim
(a transaction to queue it, one to remove its creation token, a read of the WAITING trials
and a claim: 3 transactions and 12 statements on PostgreSQL): :meth:`GridClaims.take`
creates it RUNNING for this worker, with its parameters and GridSampler's attributes, in
one transaction under the same study lock, as ``Study.ask`` creates a trial.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import TrialState

from hpo.config import StudyConfig
from hpo.search import WorkerGridSampler, is_default
from hpo.storage import (
    TrialGroup,
    new_trial,
    storage_of,
    stored_trials,
    study_id,
    trial_id,
    trial_param_groups,
)
from hpo.study import _attrs as attrs
from hpo.study._study import GridCoverage, grid_key
from hpo.study._study import _requeue as requeue

__all__ = ["LOOKAHEAD", "GridClaims"]

#: Never-started grid points a worker looks at, past the next, for one it has compiled
#: steps for: enough for a thesis grid's optimizer x batch size groups to meet again, few
#: enough that a claim stays cheap on a grid of 100,000 points.
LOOKAHEAD = 64

_log = logging.getLogger(__name__)
_Key = tuple[Any, ...]


class GridClaims:
    """One worker's view of a grid study's points, kept current incrementally.

    Args:
        study: The grid study.
        config: Its study file (the grid).
        sampler: The study's :class:`hpo.search.WorkerGridSampler`.
        defaults_first: Start the Keras-default points (the thesis's baseline) first.
    """

    def __init__(self, study: optuna.Study, config: StudyConfig, sampler: WorkerGridSampler,
                 *, defaults_first: bool = False) -> None:
        self._study = study
        self._config = config
        self._sampler = sampler
        points = sampler.points()
        self._order = list(enumerate(points))
        #: Where the defaults end in the order: a preferred point is never taken across
        #: it, so every baseline point starts before any other (0: no such boundary).
        self._defaults_end = 0
        if defaults_first:  # the thesis's baseline first: each optimizer at its defaults
            defaults: list[tuple[int, dict[str, Any]]] = []
            rest: list[tuple[int, dict[str, Any]]] = []
            for item in self._order:  # one look at each point: a grid may be huge
                (defaults if is_default(item[1]) else rest).append(item)
            self._order, self._defaults_end = defaults + rest, len(defaults)
        self._cursor = 0
        self._after = -1  # trial ids up to here have been read
        self._unfinished: dict[int, TrialGroup] = {}
        self._done: set[_Key] = set()
        self._failures: dict[_Key, int] = {}
        self._last_failure: dict[_Key, int] = {}  # key -> trial id of its latest FAIL
        self._distributions: dict[str, BaseDistribution] = {
            name: optuna.distributions.CategoricalDistribution(values)
            for name, values in sampler.search_space.items()}
        self._next: tuple[int, dict[str, Any]] | None = None  # claimed, not yet created

    def _key(self, params: dict[str, Any]) -> _Key | None:
        return grid_key(params, self._config)

    def _refresh(self) -> None:
        """Reads what changed since the last call (the first time: every trial, counted by
        state and grid point, in one query whose answer grows with the grid)."""
        names = list(self._config.grid)
        changed = trial_param_groups(storage_of(self._study), study_id(self._study), names,
                                     after=self._after, unfinished=set(self._unfinished),
                                     flag=attrs.NOT_RUN)
        if changed is None:  # not an RDB storage: read every trial, as before
            self._after, self._unfinished = -1, {}
            self._done, self._failures, self._last_failure = set(), {}, {}
            changed = [TrialGroup(t.state, None if t.state.is_finished() else t._trial_id,
                                  t.params, 1, t._trial_id, attrs.NOT_RUN in t.system_attrs)
                       for t in self._study.get_trials(deepcopy=False)]
        unfinished: dict[int, TrialGroup] = {}
        for group in changed:
            self._after = max(self._after, group.last_id)
            if group.trial_id is not None:  # WAITING or RUNNING: the read covers every
                unfinished[group.trial_id] = group  # trial unfinished before, so one not
                continue  # listed here now is counted among the finished below
            key = self._key(group.params)
            if key is None:
                continue
            if group.state in (TrialState.COMPLETE, TrialState.PRUNED):
                self._done.add(key)
            elif group.state == TrialState.FAIL:
                # a trial given up before it ran (attrs.NOT_RUN) is no failure of the point,
                # but the point is to be run again if nothing else holds it
                self._failures[key] = self._failures.get(key, 0) + \
                    (0 if group.flagged else group.count)
                self._last_failure[key] = max(self._last_failure.get(key, -1), group.last_id)
        self._unfinished = unfinished

    def _active(self) -> set[_Key]:
        """Points with a RUNNING or WAITING trial."""
        keys = (self._key(t.params) for t in self._unfinished.values())
        return {key for key in keys if key is not None}

    def coverage(self) -> GridCoverage:
        """Where every grid point stands: :func:`hpo.study.grid_coverage`'s counts, from
        this worker's picture brought up to date (a worker's opening line and its first
        claim share the one read of every trial, which at 100,000 trials takes seconds)."""
        self._refresh()
        return GridCoverage.tally(self._config.grid_size, self._done, self._active(),
                                  self._failures)

    def claim(self, *, retries: int,
              prefer: Callable[[dict[str, Any]], bool] | None = None) -> bool:
        """Makes sure a trial is there for this worker to :meth:`take`; call under the study
        lock. Returns False when the grid has nothing left for any worker to start.

        Of the next :data:`LOOKAHEAD` points never started, the first that ``prefer``
        accepts is taken before the next in order: a worker takes the points it has
        compiled steps for first (:meth:`hpo.trial.Objective.compiled_for`). Which points
        the grid runs is unchanged, only the order within that window.
        """
        if self._next is not None:  # claimed before and not taken: still this worker's
            return True
        self._refresh()
        if any(t.state == TrialState.WAITING for t in self._unfinished.values()):
            return True
        active = self._active()
        for key, count in self._failures.items():
            if count <= retries and key not in self._done and key not in active:
                _log.info("re-running grid point %s (failed %d time(s))",
                          dict(zip(self._config.grid, key)), count)
                requeue(self._study, storage_of(self._study).get_trial(self._last_failure[key]))
                return True
        if prefer is not None and (ahead := self._preferred(prefer, active)) is not None:
            self._next = ahead
            return True
        while self._cursor < len(self._order):
            grid_id, point = self._order[self._cursor]
            at = self._key(point)  # computed as the cursor passes: a grid may be huge
            self._cursor += 1
            if at in self._done or at in active or at in self._failures:
                continue
            self._next = (grid_id, point)
            return True
        return False

    def _preferred(self, prefer: Callable[[dict[str, Any]], bool], active: set[_Key]
                   ) -> tuple[int, dict[str, Any]] | None:
        """The first of the next :data:`LOOKAHEAD` never-started points that ``prefer``
        accepts, or None. A point taken so is skipped when the cursor reaches it: by then
        its trial is among the active, done or failed ones. The window never crosses the
        end of the defaults taken first (``defaults_first``)."""
        seen = 0
        end = self._defaults_end if self._cursor < self._defaults_end else len(self._order)
        for at in range(self._cursor, min(end, self._cursor + 8 * LOOKAHEAD)):
            grid_id, point = self._order[at]
            key = self._key(point)
            if key in self._done or key in active or key in self._failures:
                if at == self._cursor:  # started: the cursor need not come back to it
                    self._cursor += 1
                continue
            if prefer(point):
                return grid_id, point
            seen += 1
            if seen >= LOOKAHEAD:
                break
        return None

    def _template(self, state: TrialState) -> optuna.trial.FrozenTrial:
        assert self._next is not None
        grid_id, point = self._next
        return optuna.create_trial(
            state=state, params=point, distributions=self._distributions,
            system_attrs={"grid_id": grid_id, "search_space": self._sampler.search_space})

    def take(self) -> optuna.Trial:
        """The claimed trial, RUNNING for this worker (under the lock :meth:`claim` was
        called under): the next point, created so, or the WAITING trial ``Study.ask``
        takes."""
        if self._next is None:
            return self._study.ask()
        created = storage_of(self._study).create_new_trial(
            study_id(self._study), template_trial=self._template(TrialState.RUNNING))
        self._next = None
        return new_trial(self._study, created)

    def rivals(self, trial: optuna.Trial) -> list[int]:
        """Numbers of the other trials of ``trial``'s grid point that count for it (queued,
        running or done: any but a failure); call under the study lock. Empty when the
        point is ``trial``'s alone, as every claim made under a lock held throughout
        leaves it. Read whole from the database: only a claim whose lock was lost
        (:class:`hpo.storage.LockHold`) asks."""
        key = self._key(trial.params)
        if key is None:
            return []
        counting = (TrialState.WAITING, TrialState.RUNNING, TrialState.COMPLETE,
                    TrialState.PRUNED)
        return sorted(t.number for t in stored_trials(self._study, counting)
                      if trial_id(t) != trial_id(trial) and self._key(t.params) == key)

    def queue(self) -> None:
        """Queues the claimed point as a WAITING trial, for whichever worker asks first
        instead of taking it; nothing when none is claimed."""
        if self._next is not None:
            self._study.add_trial(self._template(TrialState.WAITING))
            self._next = None
