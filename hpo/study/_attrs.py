"""The names of the attributes hpo stores with a study and its trials, in one place.

Study user attributes are prefixed ``hpo:``; trial user attributes are plain names, so that
they read well in ``trials_dataframe()``, the dashboard and ``hpo trials --json``.
"""

from __future__ import annotations

__all__ = [
    "STUDY_FILE", "METRIC", "TRAINING", "GRID_SIZE", "DATA", "IDENTITY", "FAMILY", "LINKS",
    "IMPORTED_FROM",
    "FAIL_REASON", "FAIL_TRACEBACK", "WORKER", "WALL_TIME", "TEST_ACCURACY",
    "REPEAT_VALUES", "VALUE_STD",
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
#: What a trial's value means, recorded at creation and compared key by key on every
#: resume: the split (seed, fractions, the images in each split), the shaping (channels, image
#: size per architecture) and the metric, objectives and directions.
IDENTITY = "hpo:identity"
#: Which sampler family runs the study: ``grid`` or ``search`` (every other sampler). Optuna
#: keeps one distribution per parameter name, and the grid's are categorical while the
#: space's are ranges, so each family has a study of its own.
FAMILY = "hpo:family"
#: Family -> name of the study of that family linked to this one (``{"search": "S.search"}``
#: on the grid study ``S``, ``{"grid": "S"}`` on ``S.search``).
LINKS = "hpo:links"

# Trial user attributes
#: A search trial taken from the linked grid study as history: ``{"study": S, "trial": N}``
#: (never trained by the search, never counted in its ``n_trials``).
IMPORTED_FROM = "imported_from"
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
