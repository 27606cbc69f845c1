"""A worker's run loop: claim a trial, train it with a heartbeat, tell the result, repeat.

This is what ``hpo run`` does (in one process, or in each of ``--workers`` processes), what
``hpo worker`` does under a job scheduler, and what :func:`hpo.run` does from Python.

It uses Optuna's ask-and-tell interface rather than ``Study.optimize`` because a grid point
must be claimed and taken under one study-wide lock for every point to run exactly once
with many workers (``Study.optimize`` offers no place to hold it).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
import uuid
import warnings
from dataclasses import dataclass
from typing import Any, Callable, TypeGuard

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo.config import RunSettings, SearchSettings, StudyConfig
from hpo.errors import ConfigError, Stopped, TooManyFailures
from hpo.execution._signals import held_signals, raise_if_swallowed
from hpo.models import check_weights
from hpo.reporting import Reporter, format_params, pareto_front_lines
from hpo.search import WorkerGridSampler, canonical_sampler, enqueue_defaults
from hpo.storage import (
    Heartbeat,
    LockHold,
    StorageOptions,
    annotate_finished_trial,
    close_storage,
    count_marked_trials,
    heartbeats,
    open_storage,
    storage_of,
    study_id,
    study_lock,
    trial_id,
    stored_trials,
    withdraw_waiting_trial,
)
from hpo.study import (
    GridClaims,
    GridCoverage,
    attrs,
    check_data,
    finished_trials,
    open_study,
    pareto_front,
    reap_dead_trials,
    study_identity,
    take_grid_history,
)
from hpo.trial import EpochReport, Objective, TrialFailed, TrialRecorder

__all__ = [
    "WorkerRun",
    "prepare_study",
    "report_best",
    "run_study",
    "run_worker",
]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerRun:
    """What one worker process did.

    Attributes:
        study: The study.
        ran: Trials this process ran.
        recycle: It stopped after ``recycle_after`` trials with work left: the caller goes
            on in a fresh process.
    """

    study: optuna.Study
    ran: int
    recycle: bool = False


def prepare_study(config: StudyConfig, settings: RunSettings, *,
                  on_epoch: EpochReport | None = None) -> tuple[optuna.Study, Objective]:
    """Checks weights, opens the storage, decodes the data into the cache, opens the study,
    and gives a search the linked grid's finished trials as history
    (:func:`hpo.study.take_grid_history`, logged in one line).

    Everything that can fail on bad input fails here, before any trial is created. The
    storage is reached before any data work (a wrong URL fails at once, not after the
    decoding); the data is loaded before the study is opened, since what it is (classes,
    images, split) is part of the study's identity, checked before anything is stored. The
    settings themselves were validated when they were made; what is checked here is how
    they meet the study file (a pruner or CMA-ES with several objectives).
    """
    search = settings.search
    kind = canonical_sampler(search.sampler)
    if config.multi_objective and (search.pruner or config.pruner) != "none":
        raise ConfigError(f"pruner {search.pruner or config.pruner!r} with objectives "
                          f"{', '.join(config.objective_names)}: Optuna cannot prune a "
                          "multi-objective trial; use $pruner none")
    if config.multi_objective and kind == "cmaes":
        raise ConfigError(f"$sampler {kind} optimises one objective; for "
                          f"{', '.join(config.objective_names)} use tpe, nsgaii, random, qmc "
                          "or grid")
    for name, arch in config.architectures.items():
        check_weights(name, arch.weights)
    # The storage is opened (reached, logged in, its schema checked) before any data work:
    # a wrong URL or password fails in one line, not after minutes of decoding. The data
    # comes before the study: what it is (classes, images, split) is part of the study's
    # identity, checked before anything is stored in it.
    storage = open_storage(settings.storage.url, StorageOptions.of(settings.storage))
    objective = Objective(config, settings.trial, grid=kind == "grid", on_epoch=on_epoch,
                          check_stop=raise_if_swallowed)
    datasets = [objective.dataset(architecture) for architecture in config.architectures]
    identity = study_identity(config, datasets[0])  # one folder, one class list
    with study_lock(storage, search.study_name or config.name):
        study = open_study(config, storage, sampler=kind, study_name=search.study_name,
                           seed=settings.trial.seed, pruner=search.pruner,
                           identity=identity)
        if search.enqueue_defaults and kind != "grid":
            enqueue_defaults(study, config)
        history = take_grid_history(study, config)
    if history is not None:
        _log.info(history.line())
    check_data(study, config.data.source, datasets[0].classes,  # one folder, one class list
               datasets[0].facts)
    return study, objective


def _tell(study: optuna.Study, trial: optuna.Trial, state: TrialState,
          value: float | list[float] | None, recorder: TrialRecorder) -> FrozenTrial:
    """Tells Optuna how ``trial`` ended and returns it as stored; keeps a result whose trial
    was wrongly failed under it (as stale, while it was alive), with the records that never
    reached it (``recorder``'s leftovers)."""
    try:
        told = study.tell(trial, value if state == TrialState.COMPLETE else None,
                          state=state, skip_if_finished=True)
    except optuna.exceptions.UpdateFinishedTrialError:  # failed between tell's read and write
        told = storage_of(study).get_trial(trial_id(trial))
    leftovers = recorder.leftovers()  # had they not found it failed under us
    if state == TrialState.COMPLETE and told.state != TrialState.COMPLETE and \
            _storable(value):  # not Optuna failing a NaN: the trial was failed under us
        _keep_result_of_failed_trial(study, told, value, leftovers)
    return told


def _storable(value: float | list[float] | None) -> TypeGuard[float | list[float]]:
    """Whether Optuna stores ``value`` as a COMPLETE trial's (it fails a NaN or a None)."""
    values = value if isinstance(value, (list, tuple)) else [value]
    return all(isinstance(v, (int, float)) and not math.isnan(v) for v in values)


def _same_point(frozen: FrozenTrial, other: FrozenTrial) -> bool:
    """Whether ``other`` runs what ``frozen`` ran: a retry of it (Optuna's retry history
    names it), or, in a grid study, a trial of the same grid point."""
    if other.number == frozen.number:
        return False
    if frozen.number in (other.system_attrs.get("retry_history") or ()):
        return True
    return "grid_id" in frozen.system_attrs and "grid_id" in other.system_attrs and \
        other.params == frozen.params


def _keep_result_of_failed_trial(study: optuna.Study, frozen: optuna.trial.FrozenTrial,
                                 value: float | list[float],
                                 orphaned: dict[str, Any]) -> None:
    """The trial was failed under its worker while it ran (its heartbeat went stale: a
    paused process, a suspended host, a network cut), and its result came in late: the
    trial's end found it FAIL, so the result was not stored (the trial's RUNNING state is
    the claim its end checks, in the transaction that would end it).

    Under the study lock, the result is kept as a new trial only while the point has no
    other trial that was taken: its WAITING retries are withdrawn first, each only if still
    WAITING. Once a retry or another trial of the grid point runs or has finished, the late
    result becomes a record on the failed trial (``late_result``, ``late_result_at``) and
    never a second result of the point. The new trial is created RUNNING (a claim of the
    point, as a worker's) and completed once the lock is known to have been held
    throughout; a lock lost meanwhile (:class:`hpo.storage.LockHold`) is answered by the
    same question asked again under the lock, the new trial failed if the point was
    taken."""
    storage = storage_of(study)
    with study_lock(storage, study.study_name) as hold:
        taken, withdrawn = _taken_since(study, frozen, set())
        if taken:
            _record_late_result(study, frozen, value, taken)
            return
        kept = storage.create_new_trial(study_id(study), template_trial=optuna.create_trial(
            state=TrialState.RUNNING,
            params=frozen.params,
            distributions=frozen.distributions,
            user_attrs={**{k: v for k, v in frozen.user_attrs.items()
                           if k not in attrs.RETRY_DROPS},  # how it ended is not the result's
                        **orphaned, "recovered_from_trial": frozen.number},
            system_attrs={k: v for k, v in frozen.system_attrs.items()
                          if k in ("grid_id", "search_space")},
            intermediate_values=frozen.intermediate_values,
        ))
        if (beating := heartbeats(storage)) is not None:  # found dead if this process
            beating.record_heartbeat(kept)  # ends before it completes it, on any host
    while hold.lost:
        with study_lock(storage, study.study_name) as hold:
            taken, more = _taken_since(study, frozen, {kept, *withdrawn})
            withdrawn |= more
        if not hold.lost and taken:
            storage.set_trial_user_attr(
                kept, attrs.FAIL_REASON,
                f"not kept: trial {frozen.number}'s late result, whose point was taken by "
                f"trial {taken[0]} while this worker's study lock was lost (its database "
                "connection was cut)")
            storage.set_trial_system_attr(kept, attrs.NOT_RUN, True)  # a record, no failure
            storage.set_trial_state_values(kept, TrialState.FAIL)
            _record_late_result(study, frozen, value, taken)
            return
    storage.set_trial_state_values(kept, TrialState.COMPLETE,
                                   list(value) if isinstance(value, (list, tuple)) else [value])
    _log.warning("trial %d was marked FAIL while it was still running (its heartbeat was "
                 "late); no other trial of its point was taken, so its result is kept as a "
                 "new trial", frozen.number)


def _taken_since(study: optuna.Study, frozen: FrozenTrial, besides: set[int]
                 ) -> tuple[list[int], set[int]]:
    """The numbers of the trials of ``frozen``'s point (but those of ids ``besides``) that
    a worker took: running, or finished since ``frozen`` after running; when none, the
    point's WAITING retries are withdrawn here (those no longer WAITING by then were
    taken), and their ids returned too. Call under the study lock."""
    storage = storage_of(study)
    others = [t for t in stored_trials(study)
              if _same_point(frozen, t) and trial_id(t) not in besides]
    # taken: running or finished since; an earlier failure of the point does not count,
    # nor a trial given up before it ran (attrs.NOT_RUN: it took nothing)
    taken = [t for t in others if t.state != TrialState.WAITING and
             (t.state != TrialState.FAIL or t.number > frozen.number and
              attrs.NOT_RUN not in t.system_attrs)]
    withdrawn: set[int] = set()
    if taken:  # the result will not be kept: the point's queued retries stay queued
        return sorted(t.number for t in taken), withdrawn
    for waiting in (t for t in others if t.state == TrialState.WAITING):
        if withdraw_waiting_trial(storage, trial_id(waiting),
                                  f"superseded by trial {frozen.number}'s late result",
                                  mark=attrs.NOT_RUN):  # it never ran: no failure
            withdrawn.add(trial_id(waiting))
        else:
            taken.append(waiting)  # a worker took it since the read above
    return sorted(t.number for t in taken), withdrawn


def _record_late_result(study: optuna.Study, frozen: FrozenTrial,
                        value: float | list[float] | None, taken: list[int]) -> None:
    """Keeps a late result as a record on its FAIL trial (or, on a storage that cannot
    write to a finished trial, on the study), not as a result of the point."""
    from datetime import UTC, datetime

    record = {attrs.LATE_RESULT: list(value) if isinstance(value, (list, tuple)) else value,
              attrs.LATE_RESULT_AT: datetime.now(UTC).isoformat(timespec="seconds"),
              attrs.LATE_RESULT_SUPERSEDED_BY: taken}
    if not annotate_finished_trial(storage_of(study), trial_id(frozen), record):
        study.set_user_attr(f"{attrs.LATE_RESULT_OF}{frozen.number}", record)
    _log.warning("trial %d was marked FAIL while it was still running (its heartbeat was "
                 "late) and its point was taken again (trial %s): its late result is kept "
                 "as a record on trial %d (%s), not as a second result of the point",
                 frozen.number, ", ".join(map(str, taken)), frozen.number, attrs.LATE_RESULT)


def _run_trial(study: optuna.Study, objective: Objective, trial: optuna.Trial,
               release_signals: Callable[[], None] = lambda: None
               ) -> tuple[TrialState, FrozenTrial]:
    """Runs one trial with a heartbeat and a recorder of its own; one tell decides its
    state (Optuna's ``_run_trial``). Returns the state the objective ended it in and the
    trial as stored.
    ``release_signals`` delivers a signal held since the trial was created: inside the
    ``try`` that records why the trial stopped and whose ``finally`` tells its end."""
    state: TrialState = TrialState.FAIL
    value: float | list[float] | None = None
    recorder = TrialRecorder(trial)
    try:
        with Heartbeat(storage_of(study), trial_id(trial)):
            try:
                release_signals()
                value = objective(trial, recorder)
                state = TrialState.COMPLETE
            except optuna.TrialPruned:
                state = TrialState.PRUNED
            except TrialFailed:
                state = TrialState.FAIL
            except KeyboardInterrupt:
                recorder.record(attrs.FAIL_REASON, "interrupted (Ctrl-C)")
                raise
            except Stopped as stop:
                recorder.record(attrs.FAIL_REASON, str(stop))
                raise
    finally:
        recorder.flush(with_end=True)  # written with the trial's end, by its tell
        told = _tell(study, trial, state, value, recorder)
    return state, told


def run_study(config: StudyConfig, settings: RunSettings, reporter: Reporter) -> optuna.Study:
    """Runs (or resumes) ``config`` in this process until the grid, n_trials or timeout ends.

    Raises:
        HpoError: Bad study, data, storage or mismatched study in the storage.
        KeyboardInterrupt: On Ctrl-C, after the running trial was marked FAIL (the next
            run re-runs its grid point).
    """
    return run_worker(config, settings, reporter).study


def grid_claims(study: optuna.Study, config: StudyConfig, search: SearchSettings
                ) -> GridClaims | None:
    """The worker's :class:`hpo.study.GridClaims` for a grid study, else None."""
    if not isinstance(study.sampler, WorkerGridSampler):
        return None
    return GridClaims(study, config, study.sampler, defaults_first=search.enqueue_defaults)


def run_worker(config: StudyConfig, settings: RunSettings, reporter: Reporter, *,
               run_id: str | None = None, recycle_after: int | None = None) -> WorkerRun:
    """:func:`run_study`, stopping early for a fresh process after ``recycle_after`` trials
    (None: never; only the launcher, which can replace its own process, sets it).

    ``run_id`` names the run this worker belongs to: ``n_trials`` is the run's total,
    counted in the database as the trials stamped with it, across its workers and recycled
    processes (see :class:`_Budget`); None: a run of this worker alone.

    Raises:
        HpoError, KeyboardInterrupt: As :func:`run_study`.
    """
    search = settings.search
    study, objective = prepare_study(config, settings, on_epoch=reporter.epoch)
    claims = grid_claims(study, config, search)
    work_left = True
    if claims is not None:
        coverage = claims.coverage()  # its first read serves the first claim too
        work_left = not coverage.complete
        reporter.info(f"study {study.study_name}: grid of {coverage.size} points, "
                      f"{len(coverage.done)} done, {coverage.size - len(coverage.done)} "
                      "not done")
    else:
        finished = finished_trials(study)
        reporter.info(f"study {study.study_name}: sampler {canonical_sampler(search.sampler)}"
                      f", {finished} trials so far")
    try:
        if work_left:  # the backend's import is the worker's start-up, not a trial's
            objective.warm_up()
        ran, recycle = run_trials(study, claims, objective, search, reporter,
                                  max_retry=StorageOptions.of(settings.storage).max_retry,
                                  run_id=run_id, recycle_after=recycle_after)
        objective.close()  # the last model is on disk: prune once more with it there
        with study_lock(storage_of(study), study.study_name):
            objective.artifacts.prune_models(study)
    finally:
        try:
            objective.close()  # the model save in progress finishes (Ctrl-C, SIGTERM too)
        finally:
            close_storage(storage_of(study))
    if recycle:
        reporter.info(f"this worker ran {ran} trials: handing over to a fresh process (it "
                      "returns the memory the backend keeps between trials)")
        return WorkerRun(study, ran, recycle=True)
    if claims is not None:
        _report_grid_end(study, claims.coverage(), reporter, search.retry_failed, ran)
    report_best(study, reporter, config.metric)
    return WorkerRun(study, ran)


#: Seconds between a worker's checks for dead trials (two queries): a trial's end is
#: found within this, or at once when the grid has nothing else left to start.
REAP_EVERY_S = 5.0


class _Reaper:
    """Reaps dead trials (:func:`hpo.study.reap_dead_trials`) at most every
    :data:`REAP_EVERY_S` seconds, not before every trial: a heartbeat only goes stale after
    its grace period, so checking at each of many short trials only costs transactions."""

    def __init__(self, study: optuna.Study, max_retry: int) -> None:
        self._study = study
        self._max_retry = max_retry
        self._due = 0.0  # the first claim reaps

    def reap(self) -> bool:
        """Reaps now; True when a dead trial was found."""
        self._due = time.monotonic() + REAP_EVERY_S
        return bool(reap_dead_trials(self._study, max_retry=self._max_retry))

    def due(self) -> bool:
        """Whether the last reaping is :data:`REAP_EVERY_S` old."""
        return time.monotonic() >= self._due

    def reap_if_due(self) -> bool:
        """Reaps when :meth:`due`; True when it reaped."""
        if not self.due():
            return False
        self.reap()
        return True


class _Budget:
    """``n_trials`` as the run's total, whichever of its workers takes the trials.

    Each trial the run takes is stamped with the run's id (system attribute
    ``hpo:run_id``) under the study lock, in the same critical section that checks the
    count of stamped trials, so two workers of one run never both take the last one. The
    count lives in the database, so a recycled process (``execv``) and every supervised
    worker share it. A trial counts once taken, as in Optuna's ``n_trials``: a failed
    trial counts, and so does a retry this run takes (a retry queued from a failed trial
    does not carry its stamp: it counts for the run that takes it); a late result kept as
    a new trial does not.
    """

    def __init__(self, study: optuna.Study, run_id: str, n_trials: int) -> None:
        self._study = study
        self._run_id = run_id
        self.n_trials = n_trials

    def _taken(self) -> int:
        """The trials the run has taken (stamped), as the database counts them now."""
        return count_marked_trials(storage_of(self._study), study_id(self._study),
                                   attrs.RUN_ID, self._run_id, skip=(TrialState.WAITING,))

    def spent(self) -> bool:
        """Whether the run has taken ``n_trials`` trials; call under the study lock."""
        return self._taken() >= self.n_trials

    def over(self) -> bool:
        """Whether the run has taken more than ``n_trials`` trials (only a trial taken
        while the study lock was lost can make it so); call under the study lock."""
        return self._taken() > self.n_trials

    def stamp(self, trial: optuna.Trial) -> None:
        """Counts ``trial`` as one of the run's; under the lock :meth:`spent` was read."""
        storage_of(self._study).set_trial_system_attr(trial_id(trial), attrs.RUN_ID,
                                                      self._run_id)

    def unstamp(self, trial: optuna.Trial) -> None:
        """No longer counts ``trial``, still RUNNING, as one of the run's."""
        storage_of(self._study).set_trial_system_attr(trial_id(trial), attrs.RUN_ID, None)


class _TrialSource:
    """Where a worker's next trial comes from: the run's budget and deadline, then under the
    study lock (when one is needed) reaping dead trials, a grid point's claim, and the
    trial's creation (``ask``, or taking the claimed point)."""

    def __init__(self, study: optuna.Study, claims: GridClaims | None,
                 search: SearchSettings, *, max_retry: int, run_id: str | None,
                 recycle_after: int | None,
                 prefer: Callable[[dict[str, Any]], bool] | None = None) -> None:
        self._study = study
        self._claims = claims
        self._prefer = prefer  # grid points this worker has compiled steps for, first
        self._retries = search.retry_failed
        self._deadline = None if search.timeout is None else \
            time.monotonic() + search.timeout
        self._reaper = _Reaper(study, max_retry)
        self._budget = None if search.n_trials is None else \
            _Budget(study, run_id or uuid.uuid4().hex, search.n_trials)
        self._recycle_after = recycle_after
        #: Trials taken so far.
        self.taken = 0
        #: The source stopped for a fresh process (``recycle_after``), with work left.
        self.recycle = False

    def open(self) -> bool:
        """Whether the run may start another trial: no swallowed Ctrl-C, time left."""
        raise_if_swallowed()  # a Ctrl-C that library code swallowed: no next trial
        return self._deadline is None or time.monotonic() < self._deadline

    def take(self) -> optuna.Trial | None:
        """The next trial, RUNNING and this worker's; None when the budget or the grid is
        spent, or it is time for a fresh process (:attr:`recycle`).

        A trial taken while the study lock was lost (:class:`hpo.storage.LockHold`: its
        connection was cut, so another worker may have taken the lock and the same grid
        point, or the run's last trial, meanwhile) is checked under the lock taken again,
        and given up (FAIL, its reason said, a warning logged) when another trial has its
        point or the run's budget is over: never a grid point run twice, never more than
        ``n_trials``; then the next one is taken."""
        while True:
            trial, hold = self._take_under_lock()
            if trial is None or not hold.lost or self._kept(trial):
                break
        if trial is not None:
            self.taken += 1
        return trial

    def _take_under_lock(self) -> tuple[optuna.Trial | None, LockHold]:
        claims, reaper, budget = self._claims, self._reaper, self._budget
        # The lock makes a grid claim exactly-once, a run's n_trials its total, and one
        # worker at a time reap. A random or TPE trial of an unbounded run needs none (a
        # queued trial is claimed by a state change that only one worker wins): a
        # transaction a trial saved on PostgreSQL.
        locked = claims is not None or budget is not None or reaper.due()
        with study_lock(storage_of(self._study), self._study.study_name) if locked else \
                contextlib.nullcontext(LockHold()) as hold:
            if budget is not None and budget.spent():
                return None, hold
            reaped = reaper.reap_if_due()
            if claims is not None and not claims.claim(retries=self._retries,
                                                       prefer=self._prefer):
                # before giving up on the grid: a point held by a dead trial is free
                if reaped or not reaper.reap() or not claims.claim(
                        retries=self._retries, prefer=self._prefer):
                    return None, hold
            if self._recycle_after is not None and self.taken >= self._recycle_after:
                self.recycle = True  # a claimed grid point is left to the fresh process
                return None, hold
            with warnings.catch_warnings():
                # hpo records heartbeats itself (hpo.storage._heartbeat) around ask-and-tell.
                warnings.filterwarnings("ignore", message="Heartbeat of storage")
                trial = self._study.ask() if claims is None else claims.take()
            if budget is not None:
                budget.stamp(trial)
        return trial, hold

    def _kept(self, trial: optuna.Trial) -> bool:
        """Whether ``trial``, taken while the study lock was lost, is still this worker's to
        run, checked under the lock held throughout; if not (another trial has its grid
        point, or the run took ``n_trials`` without it), it is given up under that same
        lock, so that a rival checking next finds it failed and keeps its own."""
        while True:
            with study_lock(storage_of(self._study), self._study.study_name) as hold:
                reason = self._taken_twice(trial)
                if reason is not None:
                    self._give_up(trial, reason)
            if reason is not None or not hold.lost:  # giving up is safe, lock or not
                return reason is None

    def _taken_twice(self, trial: optuna.Trial) -> str | None:
        """Why ``trial`` must not run, or None; call under the study lock."""
        why = "while this worker's study lock was lost (its database connection was cut)"
        if self._claims is not None and (rivals := self._claims.rivals(trial)):
            return f"not run: its grid point was also taken by trial {rivals[0]} {why}"
        if self._budget is not None and self._budget.over():
            return f"not run: the run had taken its n_trials without it {why}"
        return None

    def _give_up(self, trial: optuna.Trial, reason: str) -> None:
        """Ends ``trial`` FAIL before it ran, saying why, marked :data:`attrs.NOT_RUN`: it
        uses up none of its grid point's retries, and no longer counts for the run."""
        storage = storage_of(self._study)
        storage.set_trial_user_attr(trial_id(trial), attrs.FAIL_REASON, reason)
        storage.set_trial_system_attr(trial_id(trial), attrs.NOT_RUN, True)  # no failure
        if self._budget is not None:
            self._budget.unstamp(trial)
        self._study.tell(trial, state=TrialState.FAIL)
        _log.warning("trial %d %s", trial.number, reason)


#: What runs after each trial: (study, the state the objective ended it in, the trial as
#: stored), as Optuna's ``optimize`` callbacks and KerasTuner's ``on_trial_end``.
AfterTrial = Callable[[optuna.Study, TrialState, FrozenTrial], None]


class _ConsecutiveFailures:
    """Stops the worker after ``limit`` failed trials in a row (KerasTuner's rule: one
    failed trial is the trial's problem, N in a row the code's or the environment's), and
    at its end when every trial it ran failed (not a success: exit 1)."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._ran = self._failures = 0
        self._reason = ""

    def __call__(self, study: optuna.Study, state: TrialState, finished: FrozenTrial) -> None:
        self._ran += 1
        self._failures = self._failures + 1 if state == TrialState.FAIL else 0
        self._reason = str(finished.user_attrs.get(attrs.FAIL_REASON, ""))
        if self._failures >= self._limit:
            raise TooManyFailures(self._failures, self._reason)

    def check_end(self) -> None:
        """Raises :class:`TooManyFailures` when every trial of the run failed."""
        if self._ran and self._failures == self._ran:
            raise TooManyFailures(self._failures, self._reason)


def _prune_models(objective: Objective) -> AfterTrial:
    """Keeps the best trials' models only, under the study lock."""
    def prune(study: optuna.Study, state: TrialState, finished: FrozenTrial) -> None:
        with study_lock(storage_of(study), study.study_name):
            objective.artifacts.prune_models(study)
    return prune


def run_trials(study: optuna.Study, claims: GridClaims | None, objective: Objective,
               search: SearchSettings, reporter: Reporter, *, max_retry: int = 1,
               run_id: str | None = None, recycle_after: int | None = None
               ) -> tuple[int, bool]:
    """Runs trials of ``search`` from a :class:`_TrialSource` (a grid study's through
    ``claims``) with the after-trial callbacks (prune the kept models, report, count
    failures in a row) until the budget or the grid ends, or it is time for a fresh
    process; returns how many ran and whether work is left for that fresh process.

    Raises:
        TooManyFailures: ``max_consecutive_failures`` in a row, or every trial failed.
    """
    source = _TrialSource(study, claims, search, max_retry=max_retry, run_id=run_id,
                          recycle_after=recycle_after, prefer=objective.compiled_for)
    failures = _ConsecutiveFailures(search.max_consecutive_failures)
    ran = _loop(study, source, objective, [
        _prune_models(objective),
        lambda study, state, finished: reporter.trial_done(study, finished),
        failures])
    if not source.recycle:  # a worker handing over to a fresh process is not judged yet
        failures.check_end()
    return ran, source.recycle


def _loop(study: optuna.Study, source: _TrialSource, objective: Objective,
          after_trial: list[AfterTrial]) -> int:
    """Takes trials from ``source`` and runs each (one tell), then ``after_trial``, until
    the source has none; returns how many ran."""
    ran = 0
    while source.open():
        # A signal between the trial's creation and _run_trial's try would leave it RUNNING
        # until its heartbeat expires: hold it until the trial's end is sure to be told.
        with held_signals() as release_signals:
            trial = source.take()
            if trial is None:
                break
            state, finished = _run_trial(study, objective, trial, release_signals)
        ran += 1
        for callback in after_trial:
            callback(study, state, finished)
    return ran


def _report_grid_end(study: optuna.Study, coverage: GridCoverage, reporter: Reporter,
                     retries: int, ran: int) -> None:
    if coverage.complete:
        if ran == 0:
            reporter.summary("grid complete: nothing left to run")
    elif coverage.failed and coverage.left == 0 and not coverage.running:
        reporter.summary(
            f"grid finished with {len(coverage.failed)} point(s) that failed every try "
            f"(see 'hpo trials {study.study_name}'); rerun with --retry-failed {retries + 1} "
            "to try them again")


def report_best(study: optuna.Study, reporter: Reporter, metric: str) -> None:
    """Prints the best trial so far, or a multi-objective study's Pareto front (even when
    quiet)."""
    if len(study.directions) > 1:
        for line in pareto_front_lines(study, pareto_front(study)) or \
                ["no trial has completed yet"]:
            reporter.summary(line)
        return
    try:
        best = study.best_trial
    except ValueError:
        reporter.summary("no trial has completed yet")
        return
    source = best.user_attrs.get(attrs.IMPORTED_FROM)
    where = f" (grid study {source.get('study')!r} trial {source.get('trial')}, taken as " \
        "history)" if isinstance(source, dict) else ""
    reporter.summary(f"best: trial {best.number}{where}  {metric}={best.value:.4f}  "
                     f"{format_params(best.params)}")
