"""A late result (its trial failed as stale while its worker was paused) never becomes a
second result of its point: the decision taken under the study lock, for a grid point and
for a random / TPE trial's re-queued retry (issue 25, item 6). No training: the trials are
made as the workers would leave them."""

from __future__ import annotations

import socket
import subprocess
import sys

import optuna
import pytest
from optuna.trial import TrialState

from hpo.execution._loop import _keep_result_of_failed_trial
from hpo.storage import StorageOptions, open_storage, trial_id
from hpo.study import reap_dead_trials
from tests.conftest import another_hosts_lock, cut_advisory_locks


def _worker_gone(storage: optuna.storages.BaseStorage, trial: optuna.Trial) -> None:
    """Records ``trial``'s worker as a process of this host that no longer exists."""
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    storage.set_trial_user_attr(trial_id(trial), "worker",
                                {"host": socket.gethostname(), "pid": gone})


def _stale_trial(tmp_path, grid: bool, url: str | None = None, name: str = "late"
                 ) -> tuple[optuna.Study, optuna.trial.FrozenTrial]:
    """A study whose trial 0 was failed as stale and re-queued (trial 1, WAITING)."""
    storage = open_storage(url or f"sqlite:///{tmp_path / 'late.db'}",
                           StorageOptions(heartbeat_interval=1, grace_period=1))
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
    system = {"grid_id": 0, "search_space": {"x": [1, 2]}} if grid else {}
    study.add_trial(optuna.create_trial(
        state=TrialState.WAITING, params={"x": 1},
        distributions={"x": optuna.distributions.CategoricalDistribution([1, 2])},
        system_attrs=system))
    trial = study.ask()  # the paused worker's trial, which a reaper takes for dead
    _worker_gone(storage, trial)
    assert reap_dead_trials(study, max_retry=1) == [trial.number]
    [retry] = study.get_trials(states=(TrialState.WAITING,))
    assert retry.system_attrs["failed_trial"] == trial.number
    assert "fail_reason" not in retry.user_attrs  # the failed trial's, not the retry's
    return study, storage.get_trial(trial_id(trial))


def _stored(tmp_path) -> list[optuna.trial.FrozenTrial]:
    """The trials as stock Optuna reads them from the database (no worker's cache)."""
    return optuna.load_study(study_name="late",
                             storage=f"sqlite:///{tmp_path / 'late.db'}").trials


@pytest.mark.parametrize("grid", [True, False], ids=["grid", "random"])
@pytest.mark.parametrize("retry", ["waiting", "running", "complete", "failed"])
def test_a_late_result_is_kept_only_while_the_points_retry_was_not_taken(tmp_path, grid,
                                                                        retry):
    study, stale = _stale_trial(tmp_path, grid)
    if retry != "waiting":
        taken = study.ask()  # another worker took the retry
        assert taken.params == stale.params
        if retry == "complete":
            study.tell(taken, 0.6)
        elif retry == "failed":
            study.tell(taken, state=TrialState.FAIL)
    _keep_result_of_failed_trial(study, stale, 0.9, {"test_accuracy": 0.8})
    trials = _stored(tmp_path)
    original = trials[stale.number]
    assert original.state == TrialState.FAIL
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if retry == "waiting":  # the retry withdrawn, the result kept as the point's one
        assert [t.state for t in trials[1:]] == [TrialState.FAIL, TrialState.COMPLETE]
        assert "superseded by trial 0" in trials[1].user_attrs["fail_reason"]
        assert complete[0].value == 0.9 and complete[0].user_attrs["recovered_from_trial"] == 0
        assert "fail_reason" not in complete[0].user_attrs  # the stale trial's end, not its
        assert "late_result" not in original.user_attrs
    else:  # a record on the failed trial, never a second result
        assert len(complete) == (1 if retry == "complete" else 0)
        assert not any("recovered_from_trial" in t.user_attrs for t in trials)
        assert original.user_attrs["late_result"] == 0.9
        assert original.user_attrs["late_result_superseded_by"] == [1]
        assert original.user_attrs["late_result_at"].endswith("+00:00")
    assert len(trials) == (3 if retry == "waiting" else 2)


def test_an_earlier_failure_of_the_grid_point_does_not_count_as_taken(tmp_path):
    """The point failed for real once (trial 0), its re-run (trial 1) was failed as stale
    while alive: nothing else of the point was taken, so the late result is kept."""
    storage = open_storage(f"sqlite:///{tmp_path / 'late.db'}",
                           StorageOptions(heartbeat_interval=1, grace_period=1))
    study = optuna.create_study(study_name="late", storage=storage, direction="maximize")
    point = {"params": {"x": 1},
             "distributions": {"x": optuna.distributions.CategoricalDistribution([1, 2])},
             "system_attrs": {"grid_id": 0, "search_space": {"x": [1, 2]}}}
    study.add_trial(optuna.create_trial(state=TrialState.FAIL, **point))
    study.add_trial(optuna.create_trial(state=TrialState.WAITING, **point))
    rerun = study.ask()
    storage.set_trial_state_values(trial_id(rerun), TrialState.FAIL)  # failed under it
    _keep_result_of_failed_trial(study, storage.get_trial(trial_id(rerun)), 0.7, {})
    [kept] = [t for t in _stored(tmp_path) if t.state == TrialState.COMPLETE]
    assert kept.value == 0.7 and kept.user_attrs["recovered_from_trial"] == rerun.number


@pytest.mark.parametrize(("heartbeat", "grace", "refused"), [(60, 2, True), (5, 9, True),
                                                             (5, 10, False), (1, None, False)])
def test_a_grace_shorter_than_two_heartbeats_is_refused_before_anything_runs(
        tiny_study, heartbeat, grace, refused):
    """A worker with --grace under two of its --heartbeat intervals would fail the live
    trials of workers like itself as stale."""
    from hpo.config import RunSettings, flag
    from hpo.errors import ConfigError
    from hpo.execution import plan_run

    if not refused:
        plan_run(RunSettings.create(study=str(tiny_study), heartbeat=heartbeat, grace=grace))
        return
    with pytest.raises(ConfigError) as caught:  # a rule of the storage section: at once
        RunSettings.create(study=str(tiny_study), heartbeat=heartbeat, grace=grace)
    line = caught.value.render(flag)
    assert f"--grace {grace} s would fail live trials" in line
    assert f"at least {2 * heartbeat} s" in line


@pytest.mark.parametrize("same_space", [True, False], ids=["this-namespace", "another"])
def test_a_missing_pid_is_a_dead_worker_only_in_the_process_space_it_was_recorded_in(
        tmp_path, same_space):
    """A container of the same host name (host networking) or a cloned VM sees other pids:
    a trial whose worker recorded another boot id / PID namespace is left to its heartbeat,
    not failed at once because its pid is missing here."""
    from hpo.study import process_space

    storage = open_storage(f"sqlite:///{tmp_path / 'space.db'}",
                           StorageOptions(heartbeat_interval=60, grace_period=180))
    study = optuna.create_study(study_name="space", storage=storage)
    trial = study.ask()
    storage.record_heartbeat(trial_id(trial))  # fresh: only the pid could fail it
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    space = process_space() if same_space else "another-boot-id:pid:[1]"
    storage.set_trial_user_attr(trial_id(trial), "worker",
                                {"host": socket.gethostname(), "pid": gone,
                                 "process_space": space})
    assert reap_dead_trials(study, max_retry=0) == ([trial.number] if same_space else [])


@pytest.mark.parametrize("raced", [True, False], ids=["point-taken", "nothing-taken"])
@pytest.mark.parametrize("grid", [True, False], ids=["grid", "random"])
def test_a_late_result_kept_while_the_study_lock_was_cut_is_not_a_second_result(
        tmp_path, postgres_url, monkeypatch, grid, raced):
    """The PostgreSQL study lock ends with its connection. Cut while a late result is being
    kept, another worker (of another host) takes the lock and the point (a retry queued and
    taken) before the result's trial is written: the result is not kept as a second result
    of the point but recorded on its failed trial, the trial made for it failed, saying
    why. Before, it was stored COMPLETE beside the retry's run. When nothing took the point
    meanwhile, the result is kept as without the cut."""
    from hpo.storage import storage_of
    from hpo.study._study import _requeue

    name = f"late-cut-{tmp_path.name}"
    study, stale = _stale_trial(tmp_path, grid, postgres_url, name)
    withdrawn = study.get_trials(states=(TrialState.WAITING,))[0].number
    theirs = optuna.load_study(study_name=name, storage=open_storage(postgres_url))
    taken: list[optuna.Trial] = []
    ours = storage_of(study)
    create = ours.create_new_trial
    cut = []

    def create_after_the_cut(*args, **kwargs):
        if not cut:
            cut.append(cut_advisory_locks(postgres_url))
            if raced:
                with another_hosts_lock(theirs._storage, name):
                    _requeue(theirs, stale)  # the other worker retries the point
                    taken.append(theirs.ask())
        return create(*args, **kwargs)

    monkeypatch.setattr(ours, "create_new_trial", create_after_the_cut)
    _keep_result_of_failed_trial(study, stale, 0.9, {})
    assert cut == [1]
    trials = optuna.load_study(study_name=name, storage=postgres_url).trials
    assert "superseded by trial 0" in trials[withdrawn].user_attrs["fail_reason"]
    assert trials[withdrawn].system_attrs["hpo:not_run"] is True  # it never ran
    kept = trials[-1]
    assert kept.user_attrs["recovered_from_trial"] == stale.number
    if not raced:
        assert [t.state for t in trials] == [TrialState.FAIL, TrialState.FAIL,
                                             TrialState.COMPLETE]
        assert kept.value == 0.9 and "late_result" not in trials[stale.number].user_attrs
        return
    [retry] = taken
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.FAIL, TrialState.RUNNING,
                                         TrialState.FAIL]
    assert trials[retry.number].state == TrialState.RUNNING  # the point's one run
    assert f"taken by trial {retry.number} while" in kept.user_attrs["fail_reason"]
    assert kept.system_attrs["hpo:not_run"] is True  # a record, no failure of the point
    assert trials[stale.number].user_attrs["late_result"] == 0.9
    assert trials[stale.number].user_attrs["late_result_superseded_by"] == [retry.number]


def test_a_trial_given_up_before_it_ran_did_not_take_the_point_from_a_late_result(tmp_path):
    """A trial of the point that was given up before it ran (``hpo:not_run``: taken while
    its worker's study lock was lost) took nothing: the late result is still kept."""
    study, stale = _stale_trial(tmp_path, grid=True)
    study.add_trial(optuna.create_trial(
        state=TrialState.FAIL, params=stale.params, distributions=stale.distributions,
        system_attrs={"grid_id": 0, "search_space": {"x": [1, 2]}, "hpo:not_run": True},
        user_attrs={"fail_reason": "not run: its grid point was also taken by trial 0"}))
    _keep_result_of_failed_trial(study, stale, 0.9, {})
    trials = _stored(tmp_path)
    [kept] = [t for t in trials if t.state == TrialState.COMPLETE]
    assert kept.value == 0.9 and kept.user_attrs["recovered_from_trial"] == stale.number
    assert "late_result" not in trials[stale.number].user_attrs


def test_a_reaped_retry_of_a_trial_that_never_ran_is_queued_again(tmp_path):
    """A retry's history names a trial given up before it ran (``hpo:not_run``): that was
    no try, so the retry, reaped, is queued again within ``max_retry`` 1, and the warning
    says which trials were queued."""
    import logging

    from hpo.study._study import _requeue

    storage = open_storage(f"sqlite:///{tmp_path / 'late.db'}",
                           StorageOptions(heartbeat_interval=1, grace_period=1))
    study = optuna.create_study(study_name="late", storage=storage, direction="maximize")
    study.add_trial(optuna.create_trial(
        state=TrialState.FAIL, params={"x": 1},
        distributions={"x": optuna.distributions.CategoricalDistribution([1, 2])},
        system_attrs={"hpo:not_run": True}, user_attrs={"fail_reason": "not run: ..."}))
    _requeue(study, study.trials[0])
    retry = study.ask()
    _worker_gone(storage, retry)
    assert reap_dead_trials(study, max_retry=1) == [retry.number]
    [again] = study.get_trials(states=(TrialState.WAITING,))
    assert again.params == {"x": 1}
    assert reap_dead_trials(study, max_retry=1) == []
    taken = study.ask()  # the second retry, reaped: two tries now, none left
    _worker_gone(storage, taken)
    logger = logging.getLogger("hpo")
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger.addHandler(handler)
    try:
        assert reap_dead_trials(study, max_retry=1) == [taken.number]
    finally:
        logger.removeHandler(handler)
    assert not study.get_trials(states=(TrialState.WAITING,))
    [said] = [r.getMessage() for r in records if "lost trial" in r.getMessage()]
    assert said.endswith("re-queued (tried fewer than 2 time(s)): none"), said
