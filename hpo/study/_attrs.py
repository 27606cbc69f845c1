"""The names of the attributes hpo stores with a study and its trials, in one place.

Study user attributes are prefixed ``hpo:``; trial user attributes are plain names, so that
they read well in ``trials_dataframe()``, the dashboard and ``hpo trials --json``.
"""

from __future__ import annotations

__all__ = [
    "STUDY_FILE", "METRIC", "TRAINING", "GRID_SIZE", "DATA", "RESULT_EPOCH_POLICY_OF_STUDY",
    "FAIL_REASON", "FAIL_TRACEBACK", "WORKER", "WALL_TIME", "TEST_ACCURACY",
    "REPEAT_VALUES", "VALUE_STD", "RESULT_EPOCH", "RESULT_EPOCH_POLICY",
]

# Study user attributes
#: The study file the study was created from.
STUDY_FILE = "hpo:study_file"
#: The validation metric (``val_accuracy`` or ``val_loss``): what the first value means.
METRIC = "hpo:metric"
#: The study file's training defaults (epochs, batch size, ...).
TRAINING = "hpo:training"
#: The number of grid points, for a grid study.
GRID_SIZE = "hpo:grid_size"
#: The data the study trains on: its source and its classes, checked when a run resumes.
DATA = "hpo:data"
#: The study's result epoch policy (``final`` or ``best``), checked when a run resumes.
RESULT_EPOCH_POLICY_OF_STUDY = "hpo:result_epoch"

# Trial user attributes
#: Why a trial failed (``NonFiniteLossError: ...``, ``interrupted (Ctrl-C)``, ...).
FAIL_REASON = "fail_reason"
#: The traceback of a trial that failed with an unexpected error (a bug report's start).
FAIL_TRACEBACK = "fail_traceback"
#: Host, process, GPUs and worker name that ran the trial.
WORKER = "worker"
#: Seconds the trial took, building and evaluating included.
WALL_TIME = "wall_time_s"
#: Accuracy on the test split.
TEST_ACCURACY = "test_accuracy"
#: The metric of each repeated run of the configuration.
REPEAT_VALUES = "repeat_values"
#: The standard deviation of the repeated runs' metric.
VALUE_STD = "value_std"
#: The epoch (from 1) whose weights gave the trial's value, test metrics, figures and model.
RESULT_EPOCH = "result_epoch"
#: How that epoch was chosen: ``final`` (the last trained) or ``best`` (the best metric).
RESULT_EPOCH_POLICY = "result_epoch_policy"
