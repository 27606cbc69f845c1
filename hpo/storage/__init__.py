"""Where studies live: opening SQLite / PostgreSQL / journal storages, the RDB storage that
rides out database outages and reads a worker's own trials from what it wrote, the
study-wide lock, trial heartbeats, and the dashboard note written with each trial's end.
What the layers above may ask of a storage beyond Optuna's, and the invariants hpo's storage
keeps, are in one place: :mod:`hpo.storage._contract` (:class:`HpoStorage`)."""

from hpo.storage._contract import Heartbeats, HpoStorage, heartbeats, hpo_storage
from hpo.storage._heartbeat import Heartbeat, StaleTrialRetry
from hpo.storage._locks import LockHold, study_lock
from hpo.storage._notes import NOTE_LIMIT, TrialNote, note_records, set_trial_notes
from hpo.storage._open import (
    DEFAULT_STORAGE,
    POOLED_ENV,
    STATE_INDEX,
    StorageOptions,
    close_storage,
    is_sqlite,
    mask_url,
    open_storage,
)
from hpo.storage._optuna import (
    annotate_finished_trial,
    best_trial_numbers,
    count_marked_trials,
    heartbeat_ages,
    journal_file,
    new_trial,
    set_user_attrs,
    storage_grace,
    storage_of,
    stored_trials,
    study_id,
    trial_id,
    TrialGroup,
    trial_cache,
    trial_param_groups,
    withdraw_waiting_trial,
    withheld_user_attrs,
)
from hpo.storage._contract import unwrap_storage
from hpo.storage._resilient import (
    DEFAULT_OUTAGE_TIMEOUT,
    ResilientRDBStorage,
    is_connection_error,
)
from hpo.storage._url import DIALECTS, check_storage_url

__all__ = [
    "DEFAULT_STORAGE",
    "POOLED_ENV",
    "STATE_INDEX",
    "StorageOptions",
    "mask_url",
    "is_sqlite",
    "open_storage",
    "close_storage",
    "ResilientRDBStorage",
    "is_connection_error",
    "DEFAULT_OUTAGE_TIMEOUT",
    "study_lock",
    "LockHold",
    "HpoStorage",
    "Heartbeats",
    "hpo_storage",
    "heartbeats",
    "Heartbeat",
    "StaleTrialRetry",
    "storage_of",
    "stored_trials",
    "storage_grace",
    "set_user_attrs",
    "withheld_user_attrs",
    "best_trial_numbers",
    "TrialGroup",
    "trial_cache",
    "trial_param_groups",
    "trial_id",
    "study_id",
    "new_trial",
    "unwrap_storage",
    "journal_file",
    "count_marked_trials",
    "withdraw_waiting_trial",
    "annotate_finished_trial",
    "heartbeat_ages",
    "TrialNote",
    "NOTE_LIMIT",
    "note_records",
    "set_trial_notes",
    "DIALECTS",
    "check_storage_url",
]
