"""ResilientRDBStorage: storage calls ride out lost connections, and nothing is stored twice.

Faults are injected deterministically into an SQLite storage: a statement that raises the
OperationalError a dropped connection raises, and "lost acknowledgements" (the write is
committed, then the call fails as if the answer never came back).
"""

from __future__ import annotations

import logging

import optuna
import pytest
import sqlalchemy
from optuna.storages import RDBStorage
from optuna.trial import TrialState

import hpo.storage._resilient as resilient_module
from hpo.errors import StorageError
from hpo.storage import (
    Heartbeat,
    ResilientRDBStorage,
    StorageOptions,
    is_connection_error,
    open_storage,
    set_user_attrs,
    trial_id,
)


def _dropped() -> sqlalchemy.exc.OperationalError:
    return sqlalchemy.exc.OperationalError(
        "SELECT 1", None, ConnectionError("server closed the connection unexpectedly"))


class _Faults:
    """Every ``every``-th use of a pooled connection fails at its first statement, like a
    connection the server dropped (a retry takes the connection again, and gets through)."""

    def __init__(self, engine: sqlalchemy.Engine, every: int) -> None:
        self.every = every
        self.checkouts = 0
        self.injected = 0
        self._armed = False
        sqlalchemy.event.listen(engine, "checkout", self._checkout)
        sqlalchemy.event.listen(engine, "before_cursor_execute", self._statement)

    def _checkout(self, *args: object) -> None:
        self.checkouts += 1
        self._armed = self.checkouts % self.every == 0

    def _statement(self, *args: object) -> None:
        if self._armed:
            self._armed = False
            self.injected += 1
            raise _dropped()


def _drive(storage: optuna.storages.BaseStorage, n_trials: int = 6) -> optuna.Study:
    """What a worker does to a study: ask, report epochs, set attributes, tell."""
    study = optuna.create_study(study_name="s", storage=storage,
                                sampler=optuna.samplers.RandomSampler(seed=1))
    study.enqueue_trial({"x": 0.5, "opt": "sgd"})
    for _ in range(n_trials):
        trial = study.ask()
        x = trial.suggest_float("x", 0, 1)
        trial.suggest_categorical("opt", ["adam", "sgd"])
        for step in range(3):
            trial.report(x * step, step)
        trial.set_user_attr("epochs", 3)
        study.tell(trial, x)
    return study


def _summary(study: optuna.Study) -> list[tuple]:
    return [(t.number, t.state, t.params, t.value, t.intermediate_values,
             t.user_attrs) for t in study.get_trials()]


def test_a_study_driven_through_dropped_connections_ends_as_without_them(tmp_path, caplog):
    clean = _drive(open_storage(f"sqlite:///{tmp_path / 'clean.db'}"))
    storage = open_storage(f"sqlite:///{tmp_path / 'faulty.db'}")
    assert isinstance(storage, ResilientRDBStorage)
    faults = _Faults(storage.engine, every=4)
    with caplog.at_level(logging.WARNING, logger="hpo.storage"):
        faulty = _drive(storage)
    assert faults.injected >= 10
    assert storage.retried_errors >= 10  # (Optuna itself retries a few trial creations)
    assert _summary(faulty) == _summary(clean)
    assert "unreachable" in caplog.text and "reachable again" in caplog.text


def test_a_trial_created_whose_acknowledgement_was_lost_is_created_once(tmp_path, monkeypatch):
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    original = RDBStorage._create_new_trial
    calls = []

    def commits_then_fails(self, study_id, template_trial=None):
        calls.append(1)
        frozen = original(self, study_id, template_trial)
        if len(calls) == 1:
            raise optuna.exceptions.StorageInternalError("commit") from _dropped()
        return frozen

    monkeypatch.setattr(RDBStorage, "_create_new_trial", commits_then_fails)
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    study.tell(trial, 1.0)
    # the retry found the stored trial, in its own transaction, instead of creating another
    # (the same fault at the commit itself, beneath Optuna's own retries: test_commit_faults)
    assert len(calls) == 2
    assert [(t.number, t.state) for t in study.get_trials()] == [(0, TrialState.COMPLETE)]


def test_a_tell_whose_acknowledgement_was_lost_completes_the_trial(tmp_path, monkeypatch):
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    original = resilient_module.finish_trial  # a trial's end: state, values, tokens
    lost = []

    def commits_then_fails(*args, **kwargs):
        done = original(*args, **kwargs)
        if not lost:
            lost.append(args[1])
            raise optuna.exceptions.StorageInternalError("commit") from _dropped()
        return done

    monkeypatch.setattr(resilient_module, "finish_trial", commits_then_fails)
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    study.tell(trial, 0.25)  # the retry meets a finished trial: taken as done, not an error
    assert lost
    assert [(t.state, t.value) for t in study.get_trials()] == [(TrialState.COMPLETE, 0.25)]


def test_an_outage_longer_than_the_timeout_is_one_masked_storage_error(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}", StorageOptions(outage_timeout=1))
    study = optuna.create_study(storage=storage)
    _Faults(storage.engine, every=1)
    with pytest.raises(StorageError) as raised:
        study.ask()
    message = str(raised.value)
    assert "unreachable for 1 s" in message and "resume with the same command" in message
    assert "\n" not in message


def test_the_password_never_reaches_the_outage_messages(caplog):
    storage = ResilientRDBStorage.__new__(ResilientRDBStorage)
    storage._mask = lambda text: text.replace("hunter2", "***")
    error = sqlalchemy.exc.OperationalError(
        "x", None, ConnectionError("connection to postgresql://u:hunter2@db failed"))
    assert "hunter2" not in storage._reason(error)


def test_only_connection_errors_are_retried():
    assert is_connection_error(_dropped())
    wrapped = optuna.exceptions.StorageInternalError("commit")
    wrapped.__cause__ = _dropped()
    assert is_connection_error(wrapped)
    assert not is_connection_error(sqlalchemy.exc.IntegrityError("x", None, ValueError()))
    assert not is_connection_error(optuna.exceptions.StorageInternalError("too long"))


class _FlakyHeartbeatStorage:
    """Stands in for a storage whose heartbeat writes fail as Optuna's RDBStorage fails."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.beats = 0

    def get_heartbeat_interval(self) -> int:
        return 1

    def record_heartbeat(self, trial_id: int) -> None:
        if self.failures:
            self.failures -= 1
            raise optuna.exceptions.StorageInternalError("commit") from _dropped()
        self.beats += 1


def test_the_heartbeat_thread_survives_storage_internal_errors():
    import time

    storage = _FlakyHeartbeatStorage(failures=2)
    with Heartbeat(storage, trial_id=1) as heartbeat:  # type: ignore[arg-type]
        deadline = time.monotonic() + 20
        while storage.beats == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert heartbeat.errors == 2
    assert storage.beats >= 1


def test_a_read_only_database_fails_at_once_with_one_line_not_as_an_outage(tmp_path):
    """A retry cannot cure a read-only file: it must not wait out --outage-timeout and then
    call the database 'unreachable'."""


    url = f"sqlite:///{tmp_path / 's.db'}"
    optuna.create_study(study_name="ro", storage=url)
    read_only = open_storage(f"sqlite:///file:{tmp_path / 's.db'}?mode=ro&uri=true",
                             StorageOptions(outage_timeout=120))
    with pytest.raises(StorageError) as raised:
        optuna.load_study(study_name="ro", storage=read_only).ask()
    message = str(raised.value)
    assert message.startswith("the study database is read-only; make the file")
    assert "unreachable" not in message and "\n" not in message


def test_a_file_that_is_not_a_database_is_one_line(tmp_path):

    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database" * 400)
    with pytest.raises(StorageError, match="file is not a database"):
        open_storage(f"sqlite:///{junk}", StorageOptions(outage_timeout=120))


def _two_workers(tmp_path):
    url = f"sqlite:///{tmp_path / 'claims.db'}"
    a, b = open_storage(url), open_storage(url)
    study_a = optuna.create_study(study_name="s", storage=a)
    study_a.enqueue_trial({"x": 1.0})
    return a, study_a, optuna.load_study(study_name="s", storage=b)


def test_a_claim_lost_before_its_commit_is_not_also_taken_by_the_worker_that_retries(
        tmp_path, monkeypatch):
    """Worker A's claim of the waiting trial dies with its connection before the commit;
    meanwhile worker B claims that trial. A's retry must see that the trial is B's, not
    take the RUNNING state as its own lost acknowledgement (two workers, one trial)."""
    import hpo.storage._resilient as resilient

    a, study_a, study_b = _two_workers(tmp_path)
    original = resilient.claim_waiting_trial
    injected = []

    def dies_before_commit(storage, trial_id, *args, **kwargs):
        if storage is a and not injected:
            injected.append(trial_id)
            assert study_b.ask().number == 0  # B takes the waiting trial meanwhile
            raise optuna.exceptions.StorageInternalError("commit") from _dropped()
        return original(storage, trial_id, *args, **kwargs)

    monkeypatch.setattr(resilient, "claim_waiting_trial", dies_before_commit)
    trial_a = study_a.ask()
    assert injected
    assert trial_a.number == 1  # a trial of its own, not B's
    assert [t.state for t in study_a.get_trials()] == [TrialState.RUNNING] * 2


def test_a_claim_whose_acknowledgement_was_lost_is_the_claimers_alone(tmp_path, monkeypatch):
    """A's claim is committed but its answer is lost: A's retry finds the trial is its own;
    B, asking afterwards, gets a trial of its own; no claim mark is left in the trial."""
    import hpo.storage._resilient as resilient

    a, study_a, study_b = _two_workers(tmp_path)
    original = resilient.claim_waiting_trial
    lost = []

    def commits_then_fails(storage, trial_id, *args, **kwargs):
        done = original(storage, trial_id, *args, **kwargs)
        if storage is a and not lost:
            lost.append(trial_id)
            raise optuna.exceptions.StorageInternalError("commit") from _dropped()
        return done

    monkeypatch.setattr(resilient, "claim_waiting_trial", commits_then_fails)
    trial_a = study_a.ask()
    assert trial_a.number == 0 and lost
    trial_b = study_b.ask()
    assert trial_b.number == 1
    for trial, study in ((trial_a, study_a), (trial_b, study_b)):  # first records, end
        set_user_attrs(study._storage, trial_id(trial), {"epoch": 1})
    study_a.tell(trial_a, 1.0)
    study_b.tell(trial_b, state=TrialState.FAIL)
    assert _stored_tokens(a) == {}  # read by stock Optuna: no token left in any trial


def _stored_tokens(storage) -> dict[int, list[str]]:
    """hpo's tokens left in the stored trials, as stock Optuna reads them."""
    stock = optuna.storages.RDBStorage(str(storage.engine.url))
    try:
        study = optuna.load_study(study_name="s", storage=stock)
        return {t.number: [k for k in t.system_attrs if k.startswith("hpo:")]
                for t in study.get_trials() if any(k.startswith("hpo:") for k in t.system_attrs)}
    finally:
        stock.engine.dispose()


def test_tokens_leave_a_trial_with_its_next_write_and_are_never_read(tmp_path):
    """A creation or claim token costs no transaction of its own: it leaves the stored
    trial with the trial's next write (its first records, or its end), and no read through
    hpo's storage shows it meanwhile."""
    a, study_a, _ = _two_workers(tmp_path)
    assert _stored_tokens(a) == {}  # a WAITING trial's creation token left at once
    waiting = study_a.ask()  # claims the enqueued trial: claim token
    fresh = study_a.ask()  # a new trial: creation token
    assert sorted(_stored_tokens(a).values()) == [["hpo:claim_token"], ["hpo:create_token"]]
    assert all(not any(k.startswith("hpo:") for k in t.system_attrs)
               for t in study_a.get_trials())
    assert not any(k.startswith("hpo:") for k in a.get_trial_system_attrs(trial_id(fresh)))
    set_user_attrs(a, trial_id(waiting), {"epoch": 1})
    assert list(_stored_tokens(a).values()) == [["hpo:create_token"]]
    study_a.tell(fresh, state=TrialState.PRUNED)  # ended with no record of its own
    assert _stored_tokens(a) == {}
    study_a.add_trial(optuna.trial.create_trial(value=1.0))  # made finished: no later write
    assert _stored_tokens(a) == {}


@pytest.mark.parametrize("write", ["set_trial_user_attrs", "set_trial_param",
                                   "set_trial_intermediate_value", "set_trial_system_attr"])
def test_every_retried_trial_write_whose_acknowledgement_was_lost_is_stored_once(
        tmp_path, monkeypatch, write):
    """A write that committed but whose answer was lost is retried by hpo's wrapper: the
    retry must neither fail nor store it twice (creation and state changes: see above)."""
    storage = open_storage(f"sqlite:///{tmp_path / 'w.db'}")
    study = optuna.create_study(study_name="w", storage=storage)
    trial = study.ask()
    tid = trial._trial_id
    calls = {
        "set_trial_user_attrs": lambda: storage.set_trial_user_attrs(tid, {"a": 1, "b": [2]}),
        "set_trial_param": lambda: storage.set_trial_param(
            tid, "x", 0.5, optuna.distributions.FloatDistribution(0, 1)),
        "set_trial_intermediate_value": lambda: storage.set_trial_intermediate_value(
            tid, 3, 0.75),
        "set_trial_system_attr": lambda: storage.set_trial_system_attr(tid, "k", "v"),
    }
    lost = []
    original = ResilientRDBStorage.call_with_retries

    def answer_lost_once(self, name, attempt):
        if name != write or lost:
            return original(self, name, attempt)

        def committed_then_lost(retry):
            result = attempt(retry)
            if not lost:  # the write went through; its answer did not
                lost.append(name)
                raise optuna.exceptions.StorageInternalError("commit") from _dropped()
            return result

        return original(self, name, committed_then_lost)

    monkeypatch.setattr(ResilientRDBStorage, "call_with_retries", answer_lost_once)
    calls[write]()
    assert lost
    stored = storage.get_trial(tid)
    assert (stored.user_attrs, stored.params, stored.intermediate_values,
            {k: v for k, v in stored.system_attrs.items() if not k.startswith("hpo:")}) == {
        "set_trial_user_attrs": ({"a": 1, "b": [2]}, {}, {}, {}),
        "set_trial_param": ({}, {"x": 0.5}, {}, {}),
        "set_trial_intermediate_value": ({}, {}, {3: 0.75}, {}),
        "set_trial_system_attr": ({}, {}, {}, {"k": "v"}),
    }[write]
    with storage.engine.connect() as connection:  # one row each, not two
        rows = connection.execute(sqlalchemy.text(
            "SELECT (SELECT count(*) FROM trial_user_attributes) + "
            "(SELECT count(*) FROM trial_params) + (SELECT count(*) FROM trial_intermediate_values)"
            " + (SELECT count(*) FROM trial_system_attributes WHERE key NOT LIKE 'hpo:%')"
        )).scalar()
    assert rows == {"set_trial_user_attrs": 2}.get(write, 1)


def test_stale_heartbeats_are_not_believed_right_after_a_database_outage(tmp_path):
    """During an outage every worker's heartbeat fails; the first worker back must not fail
    the others' live trials as stale (found by tests/scenarios/pg_restart.py: a live trial
    was failed, re-queued, and its grid point ran twice). One grace period after the outage,
    a stale heartbeat counts again."""
    import time

    from hpo.study import reap_dead_trials

    storage = open_storage(f"sqlite:///{tmp_path / 'hb.db'}",
                           StorageOptions(heartbeat_interval=1, grace_period=2))
    study = optuna.create_study(study_name="hb", storage=storage)
    trial = study.ask()
    storage.record_heartbeat(trial._trial_id)  # a worker elsewhere, whose heartbeat stops
    time.sleep(2.5)  # its heartbeat is stale now
    storage._outage_started("record_heartbeat", _dropped())  # and the database was down
    storage._outage_ended()  # until just now
    assert reap_dead_trials(study) == []
    assert storage.get_trial(trial._trial_id).state == TrialState.RUNNING
    time.sleep(2.2)  # one grace period after the outage
    assert reap_dead_trials(study) == [trial.number]
    assert storage.get_trial(trial._trial_id).state == TrialState.FAIL


def test_a_trial_this_worker_sets_waiting_is_read_as_stored(tmp_path):
    """A state change that does not end the trial (re-queued WAITING, with or without
    values) is read back as stored, not as this worker's copy of it from before (Optuna
    4.9's storage contract reads the values of a trial set WAITING with values)."""
    storage = open_storage(f"sqlite:///{tmp_path / 'w.db'}")
    study_id = storage.create_new_study([optuna.study.StudyDirection.MINIMIZE], "w")
    tid = storage.create_new_trial(study_id)
    assert storage.get_trial(tid).state == TrialState.RUNNING  # this worker's copy
    storage.set_trial_state_values(tid, TrialState.WAITING, [0.1, 0.2])
    stored = storage.get_trial(tid)
    assert (stored.state, stored.values) == (TrialState.WAITING, [0.1, 0.2])
