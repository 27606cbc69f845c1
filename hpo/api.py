"""The Python API: what the CLI does, callable from a script or a notebook."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import optuna

from hpo.config import StudyConfig, load_study_config
from hpo.errors import ConfigError
from hpo.execution import RunOptions, run_study
from hpo.reporting import Reporter
from hpo.storage import DEFAULT_STORAGE, StorageOptions, open_storage
from hpo.study import load_existing_study
from hpo.trial import ObjectiveOptions

__all__ = ["run", "best", "load_study"]


def _config(study: str | Path | StudyConfig, data: str | Path | None) -> StudyConfig:
    config = study if isinstance(study, StudyConfig) else load_study_config(study)
    return config.with_data(data) if data is not None else config


def run(study: str | Path | StudyConfig, *, sampler: str = "grid", storage: str | None = None,
        n_trials: int | None = None, timeout: float | None = None,
        data: str | Path | None = None, study_name: str | None = None, quiet: bool = True,
        repeats: int | None = None, objectives: str | tuple[str, ...] | None = None,
        **overrides: Any) -> optuna.Study:
    """Runs (or resumes) a study in this process and returns the stock Optuna study.

    Args:
        study: A study name, a study file path, or a loaded :class:`StudyConfig`.
        sampler: ``grid``, ``tpe``, ``random``, ... (or Optuna's class names).
        storage: Storage URL; default ``sqlite:///hpo.db`` in the working folder.
        n_trials: Most trials to run; None runs the rest of the grid.
        timeout: Seconds after which no new trial starts.
        data: A data folder overriding the study file's.
        study_name: Name in the storage; default the study file's name.
        quiet: Print nothing but the summary line.
        repeats: Training runs per configuration (overrides the study file's).
        objectives: Multi-objective search, e.g. ``("val_accuracy", "train_time")``; the
            returned study's ``best_trials`` is the Pareto front.
        **overrides: Fields of :class:`hpo.trial.ObjectiveOptions` (seed, precision,
            cache_dir, strict) and of :class:`hpo.execution.RunOptions` (retry_failed, pruner).

    Raises:
        HpoError: Bad study, data or storage.
    """
    config = _config(study, data)
    if repeats is not None:
        config = config.with_repeats(repeats)
    if objectives is not None:
        config = config.with_objectives(objectives)
    objective_fields = set(ObjectiveOptions.__dataclass_fields__) - {"grid", "on_epoch"}
    run_fields = {"retry_failed", "pruner"}
    unknown = sorted(set(overrides) - objective_fields - run_fields)
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(unknown)}; expected "
                          f"{', '.join(sorted(objective_fields | run_fields))}")
    options = RunOptions(
        sampler=sampler, storage=storage or DEFAULT_STORAGE, study_name=study_name,
        n_trials=n_trials, timeout=timeout,
        objective=replace(ObjectiveOptions(),
                          **{k: v for k, v in overrides.items() if k in objective_fields}),
        **{k: v for k, v in overrides.items() if k in run_fields},
    )
    return run_study(config, options, Reporter(metric=config.metric, quiet=quiet))


def load_study(name: str, storage: str | None = None) -> optuna.Study:
    """Loads an existing study (a stock :class:`optuna.Study`).

    Raises:
        StudyError: No such study; StorageError: storage unreachable.
    """
    return load_existing_study(name, open_storage(storage or DEFAULT_STORAGE,
                                                  StorageOptions()))


def best(study: str, storage: str | None = None) -> optuna.trial.FrozenTrial:
    """The best finished trial of ``study``.

    For a multi-objective study, the trial with the best metric (its first objective);
    ``hpo.load_study(name).best_trials`` is its Pareto front.

    Raises:
        StudyError: No such study, or no completed trial yet.
    """
    from hpo.errors import StudyError
    from hpo.study import best_by_metric

    trial = best_by_metric(load_study(study, storage))
    if trial is None:
        raise StudyError(f"study {study!r} has no completed trial yet; run it first")
    return trial
