"""The trial recorder: the one way trial/ writes a trial's user attributes. Batched writes,
the end's records held for the tell, and the records that found the trial failed under
its worker kept for the late result (never lost, never written to the failed trial)."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from hpo.storage import StorageOptions, close_storage, open_storage, storage_of, trial_id
from hpo.trial import TrialRecorder


def test_notes_are_written_at_a_flush_and_the_end_with_the_tell(sqlite_url):
    storage = open_storage(sqlite_url, StorageOptions())
    try:
        study = optuna.create_study(storage=storage)
        trial = study.ask()
        recorder = TrialRecorder(trial)
        recorder.note("a", 1)
        recorder.note("b", [1, 2])
        assert storage_of(study).get_trial(trial_id(trial)).user_attrs == {}
        recorder.flush()
        assert storage_of(study).get_trial(trial_id(trial)).user_attrs == {"a": 1, "b": [1, 2]}
        recorder.note("wall_time_s", 1.5)
        recorder.flush(with_end=True)  # held for the transaction that ends the trial
        study.tell(trial, 0.5)
        assert storage_of(study).get_trial(trial_id(trial)).user_attrs["wall_time_s"] == 1.5
        assert not recorder.failed_under_us and recorder.leftovers() == {}
    finally:
        close_storage(storage)


def test_records_that_find_the_trial_failed_under_its_worker_are_kept_aside(sqlite_url):
    storage = open_storage(sqlite_url, StorageOptions())
    other = open_storage(sqlite_url, StorageOptions())  # another worker, reaping
    try:
        study = optuna.create_study(storage=storage)
        trial = study.ask()
        recorder = TrialRecorder(trial)
        recorder.record("seed", 3)
        other.set_trial_state_values(trial_id(trial), state=TrialState.FAIL)
        recorder.note("test_accuracy", 0.9)
        recorder.flush()
        assert recorder.failed_under_us
        recorder.note("wall_time_s", 2.0)
        recorder.flush(with_end=True)
        study.tell(trial, 0.9, skip_if_finished=True)
        stored = storage_of(study).get_trial(trial_id(trial))
        assert stored.state == TrialState.FAIL and stored.user_attrs == {"seed": 3}
        assert recorder.leftovers() == {"test_accuracy": 0.9, "wall_time_s": 2.0}
        assert recorder.leftovers() == {}  # taken once
    finally:
        close_storage(other)
        close_storage(storage)
