"""The names of the attributes hpo stores with a study and its trials, in one place.

Study user attributes are prefixed ``hpo:``; trial user attributes are plain names, so that
they read well in ``trials_dataframe()``, the dashboard and ``hpo trials --json``.
"""

from __future__ import annotations

__all__ = [
    "STUDY_FILE", "METRIC", "TRAINING", "GRID_SIZE", "DATA", "RESULT_EPOCH_POLICY_OF_STUDY",
    "IDENTITY", "FAMILY", "LINKS", "IMPORTED_FROM",
    "FAIL_REASON", "FAIL_TRACEBACK", "WORKER", "WALL_TIME", "TEST_ACCURACY",
    "REPEAT_VALUES", "VALUE_STD", "RESULT_EPOCH", "RESULT_EPOCH_POLICY",
    "STUDY_UID", "LATE_RESULT", "LATE_RESULT_AT",
    "LATE_RESULT_SUPERSEDED_BY", "LATE_RESULT_OF", "RUN_ID", "NOT_RUN", "RETRY_DROPS",
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
#: The study's identity (a UUID written when hpo first opens it): what its kept models are
#: filed under, so that a study of the same name in another storage never shares them.
STUDY_UID = "hpo:study_uid"
#: A late result kept on the study (``hpo:late_result:N``) where the storage cannot write
#: to trial N once it has finished (journal, in-memory).
LATE_RESULT_OF = "hpo:late_result:"
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
#: The epoch (from 1) whose weights gave the trial's value, test metrics, figures and model.
RESULT_EPOCH = "result_epoch"
#: How that epoch was chosen: ``final`` (the last trained) or ``best`` (the best metric).
RESULT_EPOCH_POLICY = "result_epoch_policy"
#: The result of a trial that was failed under its live worker (a stale heartbeat) and
#: came in after its point was taken again: a record, never a result of the point.
LATE_RESULT = "late_result"
#: When that late result came in (UTC, ISO 8601).
LATE_RESULT_AT = "late_result_at"
#: The trials that had taken the point by then.
LATE_RESULT_SUPERSEDED_BY = "late_result_superseded_by"

# Trial system attributes
#: The run (one ``hpo run`` or ``hpo worker``, its recycled and supervised processes
#: included) that took the trial: how ``n_trials`` counts a run's trials across workers.
RUN_ID = "hpo:run_id"
#: The trial was given up before it ran: taken while the worker's study lock was lost, its
#: grid point (or its run's last trial) taken by another worker meanwhile. FAIL, but not a
#: failure of its point: it uses up none of the point's retries (``--retry-failed``).
NOT_RUN = "hpo:not_run"

#: The user attributes a retry does not copy from the failed trial it re-runs (Optuna's
#: retry copies every attribute): the records of how that trial ended, not the retry's.
RETRY_DROPS = (FAIL_REASON, FAIL_TRACEBACK, LATE_RESULT, LATE_RESULT_AT,
               LATE_RESULT_SUPERSEDED_BY)
