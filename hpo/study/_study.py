"""Create, load and resume an Optuna study from a study file; grid coverage; reaping.

The Optuna study is a plain one: ``optuna.load_study(study_name=..., storage=...)`` and the
stock dashboard read it. ``hpo`` adds study user attributes (``hpo:...``): the study file it
came from and a hash of each search space used, so that a worker with an edited file is
refused instead of mixing two searches; the study's identity (:mod:`hpo.study._identity`:
data, split, shaping, metric), checked on every resume; and its family and links
(:mod:`hpo.study._links`): a grid and a search of one study file run in two linked studies,
because Optuna keeps one distribution per parameter name and the grid's are categorical.
A study of that name that hpo did not create, with trials in it, is refused.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import socket
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo.config import FRESH_HEARTBEATS, StudyConfig
from hpo.errors import StudyError
from hpo.search import (
    canonical_sampler,
    make_pruner,
    make_sampler,
    space_hash,
)
from hpo.storage import (
    heartbeat_ages,
    storage_of,
    study_id,
    trial_cache,
    trial_id,
    trial_param_groups,
    hpo_storage,
    storage_grace,
    stored_trials,
)
from hpo.study import _attrs as attrs
from hpo.study._identity import check_identity, merge_identity, study_identity
from hpo.study._links import family_of, hpo_created, link, pick_study_name, refuse_foreign
from hpo.study._notes import keep_trial_notes

__all__ = ["GridCoverage", "open_study", "load_existing_study", "grid_coverage",
           "finished_trials", "reap_dead_trials", "grid_key", "check_data",
           "pid_alive", "process_space", "check_reap_grace", "heartbeat_interval", "FRESH_HEARTBEATS"]

_log = logging.getLogger(__name__)
#: Study system attribute: how many processes have opened the study to search it (each
#: draws its own sampler stream, :func:`_own_sampler_stream`).
SAMPLER_STREAMS = "hpo:sampler_streams"


def _max_epochs(config: StudyConfig) -> int:
    values = [int(config.training["epochs"])] + [int(v) for v in config.grid.get("epochs", ())]
    values += [int(s.high) for s in config.space if s.name == "epochs" and s.high is not None]
    values += [int(c) for s in config.space if s.name == "epochs" and s.choices
               for c in s.choices]
    return max(values)


def open_study(config: StudyConfig, storage: optuna.storages.BaseStorage, *, sampler: str,
               seed: int | None = None, study_name: str | None = None,
               pruner: str | None = None,
               identity: dict[str, Any] | None = None) -> optuna.Study:
    """Creates the study, or loads it to resume, checking it matches ``config``.

    A grid run and a search run of one study file use two linked studies
    (:mod:`hpo.study._links`): the one named ``study_name`` (default ``config.name``) when
    it belongs to the sampler's family or does not exist yet, else the linked one
    (``NAME.search`` or ``NAME.grid``). Call under :func:`hpo.storage.study_lock` of
    ``study_name``: every worker opens the study, and the first creates and links it.

    Args:
        config: The study file.
        storage: Where the study lives.
        sampler: Sampler name (``grid``, ``tpe``, ...).
        seed: Sampler seed; None uses the study's.
        study_name: Name in the database; default ``config.name``.
        pruner: Pruner name; default the study file's.
        identity: The run's :func:`hpo.study.study_identity` (with its data's keys); default
            the study file's keys alone.

    Raises:
        StudyError: The stored study (or the study it is linked to) has another identity
            (data, split, shaping, metric), optimises another direction, was created from a
            different grid or space than ``config`` now describes, or was not created by
            hpo and holds trials.
    """
    kind = canonical_sampler(sampler)
    family = family_of(kind)
    base = study_name or config.name
    identity = identity if identity is not None else study_identity(config)
    source = str(config.path)
    name = pick_study_name(storage, base, family)  # refuses a foreign study named base
    for checked in dict.fromkeys([base, name]):  # the pair shares one identity: checked
        held = refuse_foreign(storage, checked)  # before the linked study is created
        if held is not None:
            check_identity(checked, _stored_identity(held), identity, source)
    existing = refuse_foreign(storage, name)
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
    if attrs.STUDY_UID not in study.user_attrs and \
            not storage.get_n_trials(study_id(study)):
        # its identity, which files its kept models apart from those of a study of the same
        # name in another storage; a study created before keeps the layout it has
        study.set_user_attr(attrs.STUDY_UID, uuid.uuid4().hex)
    is_grid = kind == "grid"
    key = f"hpo:space_hash:{'grid' if is_grid else 'space'}"
    expected = space_hash(config, grid=is_grid)
    stored_hash = study.user_attrs.get(key)
    if stored_hash is None:
        study.set_user_attr(key, expected)
        study.set_user_attr(attrs.STUDY_FILE, str(config.path))
        study.set_user_attr(attrs.METRIC, config.metric)
        study.set_user_attr(attrs.TRAINING, dict(config.training))
        if is_grid:
            study.set_user_attr(attrs.GRID_SIZE, config.grid_size)
    elif stored_hash != expected:
        raise StudyError(
            f"study {name!r} was created from a different {'grid' if is_grid else 'space'} "
            f"(hash {stored_hash}) than {config.path} now describes (hash {expected}); restore the "
            "file, or use $study_name to start a new study with the edited one"
        )
    _check_result_epoch(study, config, name)
    _record_identity(study, existing, identity)
    link(storage, study, family, base)
    keep_trial_notes(study, config.objective_names)  # each trial's, with its end
    if not is_grid:
        _own_sampler_stream(study, kind, config, config.seed if seed is None else seed)
    return study


def _own_sampler_stream(study: optuna.Study, kind: str, config: StudyConfig,
                        seed: int) -> None:
    """Gives this process a sampler seed no other process of the study had: the k-th
    process to open the study (counted in the study system attribute
    :data:`SAMPLER_STREAMS`, under the study lock) draws stream k of ``seed``.

    With the seed alone, every worker, every recycled process and every resume drew the
    same sequence again: a random search's workers trained the same configurations, a
    resumed TPE search repeated its first suggestions. The first process of a study keeps
    the seed as given, so a study run once by one process is reproduced by its seed.
    """
    storage = storage_of(study)
    stream = int(storage.get_study_system_attrs(study_id(study)).get(SAMPLER_STREAMS, 0))
    storage.set_study_system_attr(study_id(study), SAMPLER_STREAMS, stream + 1)
    if stream:
        derived = int(np.random.SeedSequence([seed, stream]).generate_state(1)[0])
        study.sampler = make_sampler(kind, config, derived)


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


def _stored_identity(user_attrs: dict[str, Any]) -> dict[str, Any] | None:
    """A stored study's identity; for an earlier hpo's study, what it recorded of one (its
    classes and metric), so that adopting it still refuses other data."""
    if attrs.IDENTITY in user_attrs:
        return dict(user_attrs[attrs.IDENTITY])
    legacy: dict[str, Any] = {}
    if isinstance(user_attrs.get(attrs.DATA), dict) and "classes" in user_attrs[attrs.DATA]:
        legacy["data.classes"] = list(user_attrs[attrs.DATA]["classes"])
    if attrs.METRIC in user_attrs:
        legacy["metric"] = user_attrs[attrs.METRIC]
    return legacy or None


def _record_identity(study: optuna.Study, existing: dict[str, Any] | None,
                     identity: dict[str, Any]) -> None:
    """Records ``identity`` in a new study, in an earlier hpo's study (one log line), or
    the keys a stored identity lacks."""
    stored = study.user_attrs.get(attrs.IDENTITY)
    merged = merge_identity(stored, identity)
    if merged is None:
        return
    study.set_user_attr(attrs.IDENTITY, merged)
    if stored is None and existing is not None and hpo_created(existing):
        _log.info("study %r was created by an earlier hpo without a recorded identity: "
                  "recorded it now (%s); later runs are checked against it",
                  study.study_name, ", ".join(sorted(merged)))


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
                           if n and key not in done and key not in running})


def grid_coverage(study: optuna.Study, config: StudyConfig) -> GridCoverage:
    """Counts the grid points done, running, failed and left in ``study`` (on an RDB
    storage from trials counted by state and point in the database, not read whole)."""
    done: set[tuple[Any, ...]] = set()
    active: set[tuple[Any, ...]] = set()
    failures: dict[tuple[Any, ...], int] = {}
    groups = trial_param_groups(storage_of(study), study_id(study), list(config.grid),
                                after=-1, unfinished=set(), flag=attrs.NOT_RUN)
    counted = ([(t.state, t.params, 1, attrs.NOT_RUN in t.system_attrs)
                for t in study.get_trials(deepcopy=False)]
               if groups is None else [(g.state, g.params, g.count, g.flagged) for g in groups])
    for state, params, count, not_run in counted:
        if not_run:  # given up before it ran: no failure, nothing done
            continue
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


def process_space() -> str:
    """Where this process's pid means something: the machine's boot id and the PID
    namespace (``/proc``), or "" where they cannot be read. Two hosts with one host name
    (cloned VMs, containers of one name, host networking) differ here, so a pid found
    missing here is only taken as a dead worker when the worker recorded this same space."""
    parts = []
    with contextlib.suppress(OSError):
        parts.append(Path("/proc/sys/kernel/random/boot_id").read_text().strip())
    with contextlib.suppress(OSError):
        parts.append(os.readlink("/proc/self/ns/pid"))
    return ":".join(parts)


def _same_process_space(worker: dict[str, Any], host: str) -> bool:
    """Whether a trial's worker ran where this process's pids can see it."""
    if worker.get("host") != host:
        return False
    recorded = worker.get("process_space")
    return recorded is None or recorded == process_space()  # None: an earlier hpo's record


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
    """Queues ``trial``'s parameters again, as Optuna's RetryHeartbeatStaleTrialCallback does
    (which copies every attribute), without the run that took ``trial`` (the retry counts
    for the run that takes it) and without the records of how ``trial`` ended
    (:data:`attrs.RETRY_DROPS`)."""
    trial = copy.copy(trial)
    trial.system_attrs = {k: v for k, v in trial.system_attrs.items()
                          if k not in (attrs.RUN_ID, attrs.NOT_RUN)}
    # how the failed trial ended is not the retry's to carry (a COMPLETE retry with a
    # fail_reason, or a late result it never had)
    trial.user_attrs = {k: v for k, v in trial.user_attrs.items()
                        if k not in attrs.RETRY_DROPS}
    optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=None)(study, trial)


def heartbeat_interval(trial: FrozenTrial) -> int | None:
    """Seconds between the heartbeats of the worker running ``trial``, as it recorded them
    (None: it recorded none: a worker of another tool or of an older hpo)."""
    worker = trial.user_attrs.get(attrs.WORKER) or {}
    recorded = worker.get("heartbeat_s") if isinstance(worker, dict) else None
    return int(recorded) if isinstance(recorded, (int, float)) and recorded > 0 else None


def check_reap_grace(study: optuna.Study, grace: float) -> None:
    """Refuses a grace period in which a live trial may have sent no heartbeat: shorter
    than :data:`FRESH_HEARTBEATS` heartbeat intervals that a running trial's worker
    recorded.

    Raises:
        ConfigError: ``grace`` is shorter than that.
    """
    from hpo.errors import ConfigError

    running = stored_trials(study, (TrialState.RUNNING,))
    recorded = [(interval, t) for t in running if (interval := heartbeat_interval(t))]
    if not recorded:
        return
    interval, slowest = max(recorded, key=lambda pair: pair[0])
    least = FRESH_HEARTBEATS * interval
    if grace < least:
        raise ConfigError(
            f"$grace {grace:g} s would fail live trials: received {grace:g} s, expected at "
            f"least {least} s, because trial {slowest.number}'s worker records a heartbeat "
            f"every {interval} s; pass $grace {least} or more")


def reap_dead_trials(study: optuna.Study, *, max_retry: int = 1,
                     grace: float | None = None, spare_fresh: bool = False) -> list[int]:
    """Fails RUNNING trials whose worker is gone, and re-queues them (at most ``max_retry``).

    A trial is gone when its heartbeat is stale: older than ``grace`` (default the
    storage's grace period) and than :data:`FRESH_HEARTBEATS` of its own worker's
    heartbeat intervals (a worker may beat more slowly than this one), any host; or when it
    was started on this host by a process that no longer exists (found at once, without
    waiting for the grace period) -- unless ``spare_fresh`` and its last heartbeat is
    younger than ``grace`` (``hpo reap``: a process of another PID namespace on a host of
    the same name looks gone). A trial whose last heartbeat is younger than ``grace`` is
    never failed as stale.

    Returns:
        Numbers of the trials marked FAIL.
    """
    reaped: list[int] = []
    queued: list[int] = []
    storage = storage_of(study)
    keep_trial_notes(study)  # the trials failed here get their dashboard notes too
    hpo = hpo_storage(storage)
    host = socket.gethostname()
    if grace is None:
        grace = storage_grace(study)
    # RUNNING trials straight from the database (a handful), not filtered out of every
    # trial the study's cache holds
    running = stored_trials(study, (TrialState.RUNNING,))
    ages = heartbeat_ages(storage, [trial_id(t) for t in running]) if running else {}
    for trial in running:
        worker = trial.user_attrs.get(attrs.WORKER) or {}
        if not _same_process_space(worker, host) or \
                pid_alive(int(worker.get("pid", 0) or 0)):
            continue
        age = ages.get(trial_id(trial))
        if spare_fresh and age is not None and age < grace:
            continue
        requeued = _fail(study, trial, f"worker process {worker.get('pid')} on {host} died "
                                       "while the trial ran", max_retry)
        if requeued is not None:
            reaped.append(trial.number)
            queued += [trial.number] if requeued else []
    if hpo is not None and hpo.recovered_within(grace):
        # the database was just down: every live worker's heartbeat is stale too; wait
        # one grace period after the outage before believing a stale heartbeat
        _log.debug("not reaping stale heartbeats within %s s of a database outage", grace)
    elif grace:  # a storage with heartbeats
        for trial in running:
            age = ages.get(trial_id(trial))
            limit = max(grace, FRESH_HEARTBEATS * (heartbeat_interval(trial) or 0))
            if age is None or age <= limit or trial.number in reaped:
                continue
            requeued = _fail(study, trial, f"no heartbeat for {age:.0f} s (more than "
                                           f"{limit:g} s): its worker was lost, paused or cut "
                                           "off", max_retry)
            if requeued is not None:
                reaped.append(trial.number)
                queued += [trial.number] if requeued else []
    if reaped and queued == reaped:
        _log.warning("marked %d lost trial(s) FAIL and re-queued them: %s", len(reaped),
                     ", ".join(map(str, reaped)))
    elif reaped:
        _log.warning("marked %d lost trial(s) FAIL: %s; re-queued (tried fewer than %d "
                     "time(s)): %s", len(reaped), ", ".join(map(str, reaped)), max_retry + 1,
                     ", ".join(map(str, queued)) or "none")
    return reaped


def _fail(study: optuna.Study, trial: FrozenTrial, reason: str, max_retry: int
          ) -> bool | None:
    """Fails a lost RUNNING ``trial`` with ``reason`` and re-queues it while it was retried
    fewer than ``max_retry`` times (a trial given up before it ran, ``hpo:not_run``, was no
    try); whether it was re-queued, or None when another worker ended it first."""
    storage = storage_of(study)
    try:
        # The reason first: a finished trial's attributes can no longer be written.
        storage.set_trial_user_attr(trial_id(trial), attrs.FAIL_REASON, reason)
        if not storage.set_trial_state_values(trial_id(trial), state=TrialState.FAIL):
            return None
    except optuna.exceptions.UpdateFinishedTrialError:
        return None  # another worker reaped it first, or it ended
    hpo = hpo_storage(storage)
    if hpo is not None:  # the dead worker's next write would have carried them away
        hpo.forget_tokens(trial_id(trial))
    history = optuna.storages.RetryHeartbeatStaleTrialCallback.retry_history(trial)
    tries = [storage.get_trial(storage.get_trial_id_from_study_id_trial_number(
        study_id(study), number)) for number in history]
    if sum(attrs.NOT_RUN not in t.system_attrs for t in tries) < max_retry:
        _requeue(study, storage.get_trial(trial_id(trial)))
        return True
    return False
