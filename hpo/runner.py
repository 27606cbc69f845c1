"""Run a study in this process: open storage and study, reap, re-queue, optimize, report.

This is what ``hpo run`` and ``hpo worker`` do in each worker process, and what
:func:`hpo.run` does from Python.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import optuna
from optuna.trial import TrialState

from hpo.config import StudyConfig
from hpo.errors import ConfigError
from hpo.models import check_weights
from hpo.objective import Objective, ObjectiveOptions, TrialFailed
from hpo.progress import Reporter, format_params
from hpo.samplers import canonical_sampler
from hpo.storage import DEFAULT_STORAGE, StorageOptions, open_storage
from hpo.study import grid_coverage, open_study, reap_dead_trials, requeue_failed_grid_points

__all__ = ["RunOptions", "run_study"]

_log = logging.getLogger("hpo.runner")


@dataclass(frozen=True)
class RunOptions:
    """Options of one worker's run.

    Attributes:
        sampler: Sampler name.
        storage: Storage URL.
        study_name: Study name in the storage; default the study file's name.
        n_trials: Most trials this worker runs; None: the rest of the grid, or unbounded for
            other samplers (stop with ``timeout`` or Ctrl-C).
        timeout: Seconds after which no new trial starts.
        retry_failed: Times a failed grid point is re-run.
        pruner: Pruner name overriding the study file's.
        storage_options: Heartbeat and retry settings.
        objective: How trials are trained.
    """

    sampler: str = "grid"
    storage: str = DEFAULT_STORAGE
    study_name: str | None = None
    n_trials: int | None = None
    timeout: float | None = None
    retry_failed: int = 1
    pruner: str | None = None
    storage_options: StorageOptions = StorageOptions()
    objective: ObjectiveOptions = ObjectiveOptions()


def run_study(config: StudyConfig, options: RunOptions, reporter: Reporter) -> optuna.Study:
    """Runs (or resumes) ``config`` in this process until the grid, n_trials or timeout ends.

    Raises:
        HpoError: Bad study, data, storage or mismatched study in the storage.
        KeyboardInterrupt: On Ctrl-C, after Optuna marked the running trial FAIL (it is
            re-queued by the next run).
    """
    if options.n_trials is not None and options.n_trials < 1:
        raise ConfigError(f"--n-trials must be at least 1, received {options.n_trials}")
    kind = canonical_sampler(options.sampler)
    is_grid = kind == "grid"
    storage = open_storage(options.storage, options.storage_options)
    study = open_study(config, storage, sampler=kind, study_name=options.study_name,
                       seed=options.objective.seed, pruner=options.pruner)
    objective = Objective(config, replace(options.objective, grid=is_grid,
                                          on_epoch=reporter.epoch))
    # Fail fast on missing weights or bad data, before any trial is created.
    for name, arch in config.architectures.items():
        check_weights(name, arch.weights)
    for architecture in config.architectures:
        objective.dataset(architecture)

    reap_dead_trials(study, max_retry=options.storage_options.max_retry)
    n_trials = options.n_trials
    if is_grid:
        requeue_failed_grid_points(study, config, retries=options.retry_failed)
        coverage = grid_coverage(study, config)
        waiting = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
        to_run = coverage.left + waiting
        reporter.info(f"study {study.study_name}: grid of {coverage.size} points, "
                      f"{len(coverage.done)} done, {to_run} to run")
        if to_run == 0:
            if coverage.failed:
                reporter.summary(
                    f"grid finished with {len(coverage.failed)} point(s) that failed every "
                    f"try (see 'hpo trials {study.study_name}'); rerun with --retry-failed "
                    f"{options.retry_failed + 1} to try them again")
            else:
                reporter.summary("grid complete: nothing left to run")
            _report_best(study, reporter, config.metric)
            return study
        n_trials = to_run if n_trials is None else min(n_trials, to_run)
    else:
        done = sum(t.state.is_finished() for t in study.get_trials(deepcopy=False))
        reporter.info(f"study {study.study_name}: sampler {kind}, {done} trials so far")

    study.optimize(objective, n_trials=n_trials, timeout=options.timeout,
                   catch=(TrialFailed,), callbacks=[reporter.trial_done], gc_after_trial=True)
    _report_best(study, reporter, config.metric)
    return study


def _report_best(study: optuna.Study, reporter: Reporter, metric: str) -> None:
    try:
        best = study.best_trial
    except ValueError:
        reporter.summary("no trial has completed yet")
        return
    reporter.summary(f"best: trial {best.number}  {metric}={best.value:.4f}  "
                     f"{format_params(best.params)}")
