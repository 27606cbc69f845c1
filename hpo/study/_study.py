"""Create, load and resume an Optuna study from a study file; grid coverage; reaping.

The Optuna study is a plain one: ``optuna.load_study(study_name=..., storage=...)`` and the
stock dashboard read it. ``hpo`` adds study user attributes (``hpo:...``): the study file it
came from and a hash of each search space used, so that a worker with an edited file is
refused instead of mixing two searches.
"""

from __future__ import annotations

import logging
import os
import socket
import warnings
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo.config import StudyConfig
from hpo.errors import StudyError
from hpo.search import (
    WorkerGridSampler,
    canonical_sampler,
    make_pruner,
    make_sampler,
    space_hash,
)
from hpo.storage import (
    StaleTrialRetry,
    storage_of,
    study_id,
    trial_cache,
    trial_id,
    trial_param_groups,
    unwrap_storage,
)
from hpo.study import _attrs as attrs
from hpo.study._notes import keep_trial_notes

__all__ = ["GridCoverage", "open_study", "load_existing_study", "grid_coverage",
           "finished_trials", "reap_dead_trials", "claim_grid_point", "grid_key", "check_data",
           "pid_alive"]

_log = logging.getLogger("hpo.study")


def _max_epochs(config: StudyConfig) -> int:
    values = [int(config.training["epochs"])] + [int(v) for v in config.grid.get("epochs", ())]
    values += [int(s.high) for s in config.space if s.name == "epochs" and s.high is not None]
    values += [int(c) for s in config.space if s.name == "epochs" and s.choices
               for c in s.choices]
    return max(values)


def open_study(config: StudyConfig, storage: optuna.storages.BaseStorage, *, sampler: str,
               seed: int | None = None, study_name: str | None = None,
               pruner: str | None = None) -> optuna.Study:
    """Creates the study, or loads it to resume, checking it matches ``config``.

    Args:
        config: The study file.
        storage: Where the study lives.
        sampler: Sampler name (``grid``, ``tpe``, ...).
        seed: Sampler seed; None uses the study's.
        study_name: Name in the database; default ``config.name``.
        pruner: Pruner name; default the study file's.

    Raises:
        StudyError: The stored study optimises another direction, or was created from a
            different grid or space than ``config`` now describes.
    """
    kind = canonical_sampler(sampler)
    name = study_name or config.name
    study = optuna.create_study(
        study_name=name,
        storage=trial_cache(storage),
        sampler=make_sampler(kind, config, config.seed if seed is None else seed),
        pruner=make_pruner(pruner or config.pruner, max_epochs=_max_epochs(config)),
        directions=list(config.directions),
        load_if_exists=True,
    )
    stored = [d.name.lower() for d in study.directions]
    names = list(config.objective_names)
    if stored != list(config.directions) or study.metric_names not in (None, names):
        have = ", ".join(f"{n} ({d})" for n, d in zip(study.metric_names or
                                                      ["value"] * len(stored), stored))
        raise StudyError(
            f"study {name!r} in the database optimises {have}, but {config.path} (with the "
            f"options given) asks for {', '.join(names)}; use $study_name to start a new "
            "study"
        )
    if study.metric_names is None:
        with warnings.catch_warnings():  # experimental in Optuna, stable in its storage
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(names)  # what the stock dashboard labels its axes with
    is_grid = kind == "grid"
    key = f"hpo:space_hash:{'grid' if is_grid else 'space'}"
    expected = space_hash(config, grid=is_grid)
    stored = study.user_attrs.get(key)
    if stored is None:
        study.set_user_attr(key, expected)
        study.set_user_attr(attrs.STUDY_FILE, str(config.path))
        study.set_user_attr(attrs.METRIC, config.metric)
        study.set_user_attr(attrs.TRAINING, dict(config.training))
        if is_grid:
            study.set_user_attr(attrs.GRID_SIZE, config.grid_size)
    elif stored != expected:
        raise StudyError(
            f"study {name!r} was created from a different {'grid' if is_grid else 'space'} "
            f"(hash {stored}) than {config.path} now describes (hash {expected}); restore the "
            "file, or use $study_name to start a new study with the edited one"
        )
    _check_result_epoch(study, config, name)
    keep_trial_notes(study, config.objective_names)  # each trial's, with its end
    return study


def _check_result_epoch(study: optuna.Study, config: StudyConfig, name: str) -> None:
    """Records the study's result epoch policy, or refuses a run that would change it: a
    value taken at the final epoch and one taken at the best epoch mean different things,
    and one study must not rank them together.

    A study stored by an hpo that did not record the policy has trials valued at their
    best epoch: it resumes with ``result_epoch = "best"`` only.
    """
    stored = study.user_attrs.get(attrs.RESULT_EPOCH_POLICY_OF_STUDY)
    if stored is None:
        valued = storage_of(study).get_n_trials(study_id(study),
                                                (TrialState.COMPLETE, TrialState.PRUNED))
        if config.result_epoch != "best" and valued > 0:
            raise StudyError(
                f"study {name!r} was stored without a result epoch record (an earlier hpo), "
                "so its trials' values are their best epoch's metric, but "
                f"{config.path} has result_epoch = {config.result_epoch!r}; set "
                "result_epoch = \"best\" in the study file to resume it, or use $study_name "
                "to start a new study")
        study.set_user_attr(attrs.RESULT_EPOCH_POLICY_OF_STUDY, config.result_epoch)
    elif stored != config.result_epoch:
        raise StudyError(
            f"study {name!r} was created with result_epoch = {stored!r} (key "
            f"{attrs.RESULT_EPOCH_POLICY_OF_STUDY!r}), but {config.path} has result_epoch = "
            f"{config.result_epoch!r}: their values would mean different epochs; restore "
            f"result_epoch = {stored!r} in the study file, or use $study_name to start a new "
            "study")


def check_data(study: optuna.Study, source: str, classes: tuple[str, ...],
               facts: dict[str, Any] | None = None) -> None:
    """Records the data a study trains on, or checks that a resumed run trains on the same
    classes: a study whose trials saw different data (``--data`` pointed elsewhere) would
    compare scores that mean different things.

    ``facts`` (layout, a split carved from train/, duplicates, wide images; see
    :attr:`hpo.data.Dataset.facts`) are recorded with them, and brought up to date when a
    run finds them changed.

    Raises:
        StudyError: The stored study was trained on other classes.
    """
    stored = study.user_attrs.get(attrs.DATA)
    record = {"source": source, "classes": list(classes), **(facts or {})}
    if stored is None:
        study.set_user_attr(attrs.DATA, record)
        return
    if list(stored.get("classes", ())) != list(classes):
        raise StudyError(
            f"study {study.study_name!r} was trained on {stored.get('source')!r} with classes "
            f"{', '.join(stored.get('classes', ()))}, but this run's data {source!r} has "
            f"classes {', '.join(classes)}; point $data at the study's data, or use "
            "$study_name to start a new study on this data")
    if facts and any(stored.get(k) != v for k, v in facts.items()):
        study.set_user_attr(attrs.DATA, {**stored, **facts})


def load_existing_study(name: str, storage: optuna.storages.BaseStorage) -> optuna.Study:
    """Loads study ``name``, which must exist.

    Raises:
        StudyError: No study of that name in the storage (the message lists those there).
    """
    names = [s.study_name for s in storage.get_all_studies()]
    if name not in names:
        raise StudyError(f"no study {name!r} in this storage; studies there: "
                         f"{', '.join(sorted(names)) or 'none'} (run 'hpo run --study {name}' "
                         "first, or pass $storage)")
    return optuna.load_study(study_name=name, storage=storage)


def grid_key(params: dict[str, Any], config: StudyConfig) -> tuple[Any, ...] | None:
    """The grid point a trial's ``params`` stand for, or None if it is not a grid trial."""
    if not all(k in params for k in config.grid):
        return None
    key = tuple(params[k] for k in config.grid)
    return key if all(v in config.grid[k] for k, v in zip(config.grid, key)) else None


@dataclass
class GridCoverage:
    """Where every grid point stands.

    Attributes:
        size: Points in the grid.
        done: Points with a COMPLETE or PRUNED trial.
        running: Points with a RUNNING or WAITING trial and none done.
        failed: Points whose every trial failed, -> number of failed trials.
        left: Points not yet tried.
    """

    size: int
    done: set[tuple[Any, ...]] = field(default_factory=set)
    running: set[tuple[Any, ...]] = field(default_factory=set)
    failed: dict[tuple[Any, ...], int] = field(default_factory=dict)

    @property
    def left(self) -> int:
        return self.size - len(self.done) - len(self.running) - len(self.failed)

    @property
    def complete(self) -> bool:
        return len(self.done) == self.size

    @classmethod
    def tally(cls, size: int, done: set[tuple[Any, ...]], active: set[tuple[Any, ...]],
              failures: dict[tuple[Any, ...], int]) -> GridCoverage:
        """From the points with a finished trial (``done``), with a RUNNING or WAITING one
        (``active``) and the failed trials per point: a point done counts as done only, one
        both active and failed as running, a failed one as failed only if nothing else."""
        running = active - done
        return cls(size=size, done=set(done), running=running,
                   failed={key: n for key, n in failures.items()
                           if key not in done and key not in running})


def grid_coverage(study: optuna.Study, config: StudyConfig) -> GridCoverage:
    """Counts the grid points done, running, failed and left in ``study`` (on an RDB
    storage from trials counted by state and point in the database, not read whole)."""
    done: set[tuple[Any, ...]] = set()
    active: set[tuple[Any, ...]] = set()
    failures: dict[tuple[Any, ...], int] = {}
    groups = trial_param_groups(storage_of(study), study_id(study), list(config.grid),
                                after=-1, unfinished=set())
    counted = ([(t.state, t.params, 1) for t in study.get_trials(deepcopy=False)]
               if groups is None else [(g.state, g.params, g.count) for g in groups])
    for state, params, count in counted:
        key = grid_key(params, config)
        if key is None:
            continue
        if state in (TrialState.COMPLETE, TrialState.PRUNED):
            done.add(key)
        elif state in (TrialState.RUNNING, TrialState.WAITING):
            active.add(key)
        elif state == TrialState.FAIL:
            failures[key] = failures.get(key, 0) + count
    return GridCoverage.tally(config.grid_size, done, active, failures)


def finished_trials(study: optuna.Study) -> int:
    """How many trials of ``study`` are finished (one count on an RDB storage)."""
    return storage_of(study).get_n_trials(
        study_id(study), (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL))


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (another user's counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _requeue(study: optuna.Study, trial: FrozenTrial) -> None:
    """Queues ``trial``'s parameters again, as Optuna's RetryHeartbeatStaleTrialCallback does."""
    optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=None)(study, trial)


def reap_dead_trials(study: optuna.Study, *, max_retry: int = 1) -> list[int]:
    """Fails RUNNING trials whose worker is gone, and re-queues them (at most ``max_retry``).

    A trial is gone when its heartbeat is stale (Optuna's own check, any host), or when it
    was started on this host by a process that no longer exists (found at once, without
    waiting for the grace period).

    Returns:
        Numbers of the trials marked FAIL.
    """
    reaped = []
    storage = storage_of(study)
    keep_trial_notes(study)  # the trials failed here get their dashboard notes too
    host = socket.gethostname()
    # RUNNING trials straight from the database (a handful), not filtered out of every
    # trial the study's cache holds
    running = unwrap_storage(storage).get_all_trials(study_id(study), deepcopy=False,
                                                     states=(TrialState.RUNNING,))
    for trial in running:
        worker = trial.user_attrs.get(attrs.WORKER) or {}
        if worker.get("host") != host or pid_alive(int(worker.get("pid", 0) or 0)):
            continue
        try:
            # The reason first: a finished trial's attributes can no longer be written.
            storage.set_trial_user_attr(trial_id(trial), attrs.FAIL_REASON,
                                        f"worker process {worker.get('pid')} on {host} "
                                        "died while the trial ran")
            if storage.set_trial_state_values(trial_id(trial), state=TrialState.FAIL):
                reaped.append(trial.number)
                forget = getattr(unwrap_storage(storage), "forget_tokens", None)
                if forget is not None:  # the dead worker's next write would have
                    forget(trial_id(trial))  # carried its tokens away
                retries = len(optuna.storages.RetryHeartbeatStaleTrialCallback.retry_history(trial))
                if retries < max_retry:
                    _requeue(study, storage.get_trial(trial_id(trial)))
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker reaped it first
    backend = unwrap_storage(storage)
    grace = getattr(backend, "grace_period", None) or \
        2 * (getattr(backend, "heartbeat_interval", None) or 0)
    if getattr(backend, "recovered_within", lambda seconds: False)(grace):
        # the database was just down: every live worker's heartbeat is stale too; wait
        # one grace period after the outage before believing a stale heartbeat
        _log.debug("not reaping stale heartbeats within %s s of a database outage", grace)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)  # RUNNING trials with a stale heartbeat
    callback = getattr(unwrap_storage(storage), "get_heartbeat_stale_trial_callback",
                       lambda: None)()
    if isinstance(callback, StaleTrialRetry):
        reaped += sorted(callback.drain())
    if reaped:
        _log.warning("marked %d lost trial(s) FAIL and re-queued them: %s", len(reaped),
                     ", ".join(map(str, reaped)))
    return reaped


def claim_grid_point(study: optuna.Study, config: StudyConfig, sampler: WorkerGridSampler, *,
                     retries: int, defaults_first: bool = False) -> bool:
    """Makes sure a WAITING trial is there for this worker to take; call under the lock.

    In order: a trial already waiting (a retry, or a point another worker queued); a grid
    point whose every trial failed, while it has failed at most ``retries`` times (Optuna's
    GridSampler would count it as visited for good, optuna#4721); the next point never
    started. The point is queued with GridSampler's own system attributes.

    A worker's loop keeps one :class:`hpo.study.GridClaims` instead, which reads only what
    changed between its claims.

    Returns:
        False when the grid has nothing left for any worker to start.
    """
    from hpo.study._claims import GridClaims

    claims = GridClaims(study, config, sampler, defaults_first=defaults_first)
    if not claims.claim(retries=retries):
        return False
    claims.queue()
    return True
