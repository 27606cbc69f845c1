"""The Python API: what the CLI does, callable from a script or a notebook."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator

import optuna

from hpo.config import DEFAULT_STORAGE, RunSettings, StudyConfig
from hpo.execution import plan_run, run_study, worker_signals
from hpo.storage import StorageOptions, open_storage
from hpo.study import load_existing_study

__all__ = ["run", "best", "load_study"]


def run(study: str | Path | StudyConfig, settings: RunSettings | None = None,
        **values: Any) -> optuna.Study:
    """Runs (or resumes) a study in this process and returns the stock Optuna study.

    Takes the same settings as ``hpo run`` (:class:`hpo.config.RunSettings`), either as a
    settings object or as keyword arguments, validated the same way; here ``quiet`` defaults
    to True. For example::

        hpo.run("demo", sampler="tpe", n_trials=20, seed=1)
        hpo.run("demo", hpo.config.RunSettings.create(study="demo", sampler="random"))

    Args:
        study: A study name, a study file path, or a loaded :class:`StudyConfig`.
        settings: The run's settings (its ``study`` is replaced by ``study``).
        **values: Settings by name (see :class:`hpo.config.RunSettings`): ``sampler``,
            ``storage``, ``n_trials``, ``timeout``, ``data``, ``study_name``, ``seed``,
            ``precision``, ``pruner``, ``retry_failed``, ``repeats``, ``objectives`` (a
            comma-separated string or a sequence), ``cache_dir``, ``strict``, ...

    Signals are handled as ``hpo run`` handles them, while it runs (from the main thread
    only: elsewhere no handler can be installed): Ctrl-C raises ``KeyboardInterrupt``;
    SIGTERM (a scheduler's stop), SIGHUP (a closed terminal) and the other signals whose
    default ends the process raise :class:`hpo.errors.Stopped`; either way after the trial
    in flight was marked FAIL. The caller's own handlers are back when it returns.

    Raises:
        HpoError: Bad study, data, settings (:class:`hpo.errors.InvalidSetting` names the
            setting) or storage.
        KeyboardInterrupt, hpo.errors.Stopped: A signal stopped the run (``Stopped`` carries
            the exit status a command would have: ``sys.exit(stop.exit_code)``).
    """
    from hpo.errors import InvalidSetting

    config = study if isinstance(study, StudyConfig) else None
    name = config.name if config is not None else str(study)
    if isinstance(values.get("objectives"), (list, tuple)):
        values["objectives"] = ",".join(values["objectives"])
    if settings is None:
        settings = RunSettings.create(**{"quiet": True, **values, "study": name})
    elif isinstance(settings, RunSettings):
        settings = settings.replace(**values, study=name)
    else:
        raise InvalidSetting("settings", "must be a hpo.config.RunSettings (or pass the "
                             "settings as keyword arguments: hpo.run(study, n_trials=10))",
                             type(settings).__name__)
    _refuse_process_settings(settings)
    from hpo.reporting import quiet_backends

    quiet_backends()  # as the CLI: TensorFlow's C++ start-up lines, unless asked for
    config, reporter = plan_run(settings, config)
    with worker_signals(embedded=True), _quiet():  # a second Ctrl-C never ends the caller's
        return run_study(config, settings, reporter)  # process


#: Settings that start or replace processes, which a call in someone's interpreter does not:
#: (setting, the value that means "this process only").
_PROCESS_SETTINGS = (("workers", 1), ("gpus", None), ("trials_per_gpu", 1),
                     ("isolate", False), ("recycle_after", None))


def _refuse_process_settings(settings: RunSettings) -> None:
    """:func:`run` trains in the caller's process: a setting that would start or replace
    processes is refused with one line, never ignored.

    Raises:
        InvalidSetting: ``workers``, ``gpus``, ``trials_per_gpu``, ``isolate`` or
            ``recycle_after`` asks for other processes.
    """
    from hpo.errors import InvalidSetting

    for setting, alone in _PROCESS_SETTINGS:
        value = getattr(settings.process, setting)
        if value != alone and not (setting == "recycle_after" and value == 0):
            raise InvalidSetting(
                setting, "starts or replaces processes, which hpo.run (one worker in this "
                "process) does not do; run 'hpo run' with it from a shell, or start "
                "several hpo.run / 'hpo worker' processes on one storage", value)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """As quiet as the CLI while the run lasts: Optuna's INFO lines and its experimental-
    feature warnings off (hpo prints each trial itself), the caller's settings back after."""
    import warnings

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(verbosity)


def load_study(name: str, storage: str | None = None) -> optuna.Study:
    """Loads an existing study (a stock :class:`optuna.Study`).

    Raises:
        StudyError: No such study; StorageError: storage unreachable.
    """
    return load_existing_study(name, open_storage(storage or DEFAULT_STORAGE,
                                                  StorageOptions(), create=False))


def best(study: str, storage: str | None = None) -> optuna.trial.FrozenTrial:
    """The best finished trial of ``study``: over it and the study linked to it (a grid
    and the search beyond it), as ``hpo best`` shows it; ``trial.user_attrs`` and
    ``hpo.load_study`` of its study (``S`` or ``S.search``) tell which.

    For a multi-objective study, the trial with the best metric (its first objective);
    ``hpo.load_study(name).best_trials`` is its Pareto front.

    Raises:
        StudyError: No such study, or no completed trial yet.
    """
    from hpo.errors import StudyError
    from hpo.reporting import pair_best
    from hpo.study import best_by_metric

    loaded = load_study(study, storage)
    found = pair_best(loaded) if len(loaded.directions) == 1 else None
    trial = found[1] if found is not None else best_by_metric(loaded)
    if trial is None:
        raise StudyError(f"study {study!r} has no completed trial yet; run it first")
    return trial
