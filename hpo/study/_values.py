"""What a trial's values mean: the validation metric first, then any other objectives.

A single-objective study has one value per trial; a multi-objective one (``--objectives
val_accuracy,train_time``) has one per objective, the metric always first. Views, reports
and the kept models rank trials by the metric, so they work the same on both.
"""

from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial

__all__ = ["metric_value", "metric_maximized", "objective_names", "best_by_metric",
           "pareto_front"]


def metric_value(trial: FrozenTrial) -> float | None:
    """The trial's validation metric (its first value), or None if it has none."""
    return trial.values[0] if trial.values else None


def metric_maximized(study: optuna.Study) -> bool:
    """Whether the study's metric (its first objective) is maximised."""
    return study.directions[0] == optuna.study.StudyDirection.MAXIMIZE


def objective_names(study: optuna.Study) -> list[str]:
    """The names of the study's objectives (``value`` where a study has none stored)."""
    names = study.metric_names
    if names:
        return list(names)
    count = len(study.directions)
    return ["value"] if count == 1 else [f"value{i}" for i in range(count)]


def best_by_metric(study: optuna.Study) -> FrozenTrial | None:
    """The best trial: Optuna's ``best_trial``, or in a multi-objective study the trial with
    the best metric (its Pareto front is ``study.best_trials``); None before any completes."""
    if len(study.directions) == 1:
        try:
            return study.best_trial
        except ValueError:
            return None
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        return None
    pick = max if metric_maximized(study) else min
    return pick(complete, key=lambda t: t.values[0])


def pareto_front(study: optuna.Study) -> list[FrozenTrial]:
    """A multi-objective study's Pareto front (``study.best_trials``), by trial number."""
    return sorted(study.best_trials, key=lambda t: t.number)
