"""One Optuna study as hpo uses it: open or resume it, grid coverage and exactly-once
claims, reaping lost trials, each finished trial's dashboard note, and reading its objective values (best trial, Pareto front)."""

from hpo.study import _attrs as attrs
from hpo.study._claims import GridClaims
from hpo.study._identity import study_identity
from hpo.study._links import GridHistory, linked_studies, take_grid_history
from hpo.study._notes import keep_trial_notes, trial_note
from hpo.study._study import (
    FRESH_HEARTBEATS,
    GridCoverage,
    check_data,
    check_reap_grace,
    finished_trials,
    grid_coverage,
    grid_key,
    heartbeat_interval,
    load_existing_study,
    open_study,
    pid_alive,
    process_space,
    reap_dead_trials,
)
from hpo.study._values import (
    best_by_metric,
    metric_maximized,
    metric_value,
    objective_names,
    pareto_front,
)

__all__ = [
    "attrs",
    "GridCoverage",
    "open_study",
    "load_existing_study",
    "grid_coverage",
    "finished_trials",
    "reap_dead_trials",
    "GridClaims",
    "grid_key",
    "check_data",
    "study_identity",
    "GridHistory",
    "linked_studies",
    "take_grid_history",
    "pid_alive",
    "process_space",
    "check_reap_grace",
    "heartbeat_interval",
    "FRESH_HEARTBEATS",
    "metric_value",
    "metric_maximized",
    "objective_names",
    "best_by_metric",
    "pareto_front",
    "trial_note",
    "keep_trial_notes",
]
