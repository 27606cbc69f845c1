"""A worker reads its own trials back from what it wrote (issue 16: 3 reads of 6 statements
each per trial on an RDB storage), and what it reads is what the database holds: checked
against stock RDBStorage reading the same rows, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from hpo.config import load_study_config
from hpo.storage import close_storage, open_storage, set_user_attrs, trial_id
from hpo.study import GridClaims, open_study
from hpo.testing import write_study


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'mirror.db'}"
    return request.getfixturevalue("postgres_url")


class _Statements:
    """Counts the SQL statements run while it is entered."""

    def __enter__(self) -> "_Statements":
        self.count = 0
        sqlalchemy.event.listen(sqlalchemy.engine.Engine, "before_cursor_execute", self._one)
        return self

    def _one(self, *args) -> None:
        self.count += 1

    def __exit__(self, *exc) -> None:
        sqlalchemy.event.remove(sqlalchemy.engine.Engine, "before_cursor_execute", self._one)


@pytest.fixture()
def study(url) -> Iterator[optuna.Study]:
    """A new study on hpo's storage at ``url``."""
    storage = open_storage(url)
    try:
        yield optuna.create_study(storage=storage, study_name=f"m-{uuid.uuid4().hex[:8]}",
                                  direction="maximize")
    finally:
        close_storage(storage)


def _failed_by_another_worker(url: str, trial: optuna.Trial) -> None:
    """What another worker does when it judges ``trial`` stale."""
    other = optuna.storages.RDBStorage(url)
    other.set_trial_state_values(trial_id(trial), TrialState.FAIL)
    other.engine.dispose()


def _stored(url: str, trial: int) -> optuna.trial.FrozenTrial:
    """The trial as stock Optuna reads it from the database."""
    stock = optuna.storages.RDBStorage(url)
    try:
        return stock.get_trial(trial)
    finally:
        stock.engine.dispose()


def test_a_workers_own_trial_reads_as_stored_without_a_query(url, study):
    trial = study.ask()
    trial.suggest_float("lr", 1e-4, 1e-1, log=True)
    trial.suggest_int("units", 8, 64)
    trial.suggest_categorical("optimizer", ["Adam", "SGD"])
    set_user_attrs(trial.storage, trial_id(trial), {"host": "h", "seed": 3, "nested": [1]})
    trial.set_user_attr("one", 1.5)
    trial.storage.set_trial_system_attr(trial_id(trial), "mine", {"a": 1})
    trial.report(0.25, step=0)
    trial.report(float("inf"), step=1)
    with _Statements() as reads:
        mirrored = trial.storage.get_trial(trial_id(trial))
    assert reads.count == 0
    assert mirrored == _stored(url, trial_id(trial))
    told = study.tell(trial, 0.75)
    assert told == _stored(url, trial_id(trial))  # state, value, end time
    assert told.state == TrialState.COMPLETE and told.value == 0.75


def test_a_claimed_grid_point_reads_as_stored(url, tmp_path, image_folder):
    config = load_study_config(write_study(tmp_path / "g.toml", data=image_folder,
                                           name=f"m-{uuid.uuid4().hex[:8]}"))
    storage = open_storage(url)
    try:
        study = open_study(config, storage, sampler="grid")
        claims = GridClaims(study, config, study.sampler)
        for queued in (False, True):  # a point created RUNNING; one queued, then taken
            assert claims.claim(retries=0)
            if queued:
                claims.queue()
            trial = claims.take()
            with _Statements() as reads:
                mirrored = trial.storage.get_trial(trial_id(trial))
            assert reads.count == 0
            set_user_attrs(trial.storage, trial_id(trial), {"host": "h"})  # its first record
            mirrored.user_attrs = {"host": "h"}  # (and the creation token leaves with it)
            stored = _stored(url, trial_id(trial))
            assert mirrored == stored and stored.state == TrialState.RUNNING
            assert set(stored.system_attrs) == {"grid_id", "search_space"}
            study.tell(trial, 0.5)
    finally:
        close_storage(storage)


def test_a_trial_failed_by_another_worker_is_read_from_the_database(url, study):
    trial = study.ask()
    _failed_by_another_worker(url, trial)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        set_user_attrs(trial.storage, trial_id(trial), {"wall_time_s": 1.0})
    assert trial.storage.get_trial(trial_id(trial)).state == TrialState.FAIL
    told = study.tell(trial, 1.0, skip_if_finished=True)
    assert told.state == TrialState.FAIL and told.values is None


def test_a_trials_last_records_are_written_with_its_end(url, study):
    trial = study.ask()
    set_user_attrs(trial.storage, trial_id(trial), {"host": "h"})
    set_user_attrs(trial.storage, trial_id(trial), {"wall_time_s": 2.5}, with_end=True)
    assert "wall_time_s" not in _stored(url, trial_id(trial)).user_attrs  # not yet
    with _Statements() as writes:
        told = study.tell(trial, 0.5)
    assert writes.count <= 6  # the trial's row, its value, its records: one transaction
    stored = _stored(url, trial_id(trial))
    assert stored.user_attrs == {"host": "h", "wall_time_s": 2.5} == told.user_attrs
    assert stored == told and stored.state == TrialState.COMPLETE


def test_last_records_of_a_trial_failed_meanwhile_are_handed_back(url, study):
    from hpo.storage import withheld_user_attrs

    trial = study.ask()
    set_user_attrs(trial.storage, trial_id(trial), {"wall_time_s": 2.5}, with_end=True)
    _failed_by_another_worker(url, trial)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        study.tell(trial, 0.5)
    assert withheld_user_attrs(trial.storage, trial_id(trial)) == {"wall_time_s": 2.5}
    assert withheld_user_attrs(trial.storage, trial_id(trial)) == {}  # taken once
    stored = _stored(url, trial_id(trial))
    assert stored.state == TrialState.FAIL and "wall_time_s" not in stored.user_attrs
    assert not any(key.startswith("hpo:") for key in stored.system_attrs)  # no token left
