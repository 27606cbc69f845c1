"""Faults injected where Optuna itself is fragile, on the real PostgreSQL.

Each test counts what a user cares about: trials lost (must be 0) and grid points trained
more than once (must be 0). RELIABILITY.md reports these figures.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from hpo.testing import write_study
from tests.conftest import ended, run_here, wait_for_training
from tests.tcp_proxy import CuttableProxy

#: The subject here is processes and storage, not the backend: the hpo processes train on
#: JAX, which starts faster (tests/conftest.py, ``_keras_backend_of_the_test``).
pytestmark = [pytest.mark.postgres, pytest.mark.keras_backend("jax")]


def _worker(study_file: Path, storage: str, cwd: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "hpo", "worker", "--study", str(study_file), "--quiet", *extra],
        cwd=cwd, env={**os.environ, "HPO_STORAGE": storage}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)


def _complete_points(study: optuna.Study) -> list[tuple]:
    return [tuple(sorted(t.params.items()))
            for t in study.get_trials(states=(TrialState.COMPLETE,))]


def test_a_live_trial_falsely_failed_as_stale_keeps_its_result(tmp_path, image_folder,
                                                               postgres_url):
    name = f"stale-{uuid.uuid4().hex[:8]}"
    study_file = write_study(tmp_path / "s.toml", data=image_folder, name=name, epochs=15)
    proc = _worker(study_file, postgres_url, tmp_path, "--heartbeat", "1", "--grace", "60")
    victim = wait_for_training(name, postgres_url, proc)
    # What another worker does when it wrongly judges the trial stale:
    storage = optuna.storages.RDBStorage(postgres_url)
    study = optuna.load_study(study_name=name, storage=storage)
    storage.set_trial_state_values(victim._trial_id, TrialState.FAIL)
    optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)(
        study, storage.get_trial(victim._trial_id))
    out, err = ended(proc, 600)
    assert proc.returncode == 0, err
    assert err.count("was marked FAIL while it was still running") == 1
    study = optuna.load_study(study_name=name, storage=postgres_url)
    recovered = [t for t in study.get_trials(states=(TrialState.COMPLETE,))
                 if t.user_attrs.get("recovered_from_trial") == victim.number]
    assert len(recovered) == 1
    assert recovered[0].params == victim.params
    assert "test_accuracy" in recovered[0].user_attrs
    assert "wall_time_s" in recovered[0].user_attrs  # the records held for its end, too
    points = _complete_points(study)
    assert len(points) == len(set(points)) == 4  # lost: 0, duplicates: 0
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
    optuna.delete_study(study_name=name, storage=postgres_url)


def test_every_connection_terminated_mid_trial_loses_nothing(tmp_path, image_folder,
                                                             postgres_url):
    name = f"blip-{uuid.uuid4().hex[:8]}"
    study_file = write_study(tmp_path / "s.toml", data=image_folder, name=name, epochs=15)
    # The worker's connections carry the test's name, so that only they are terminated,
    # not those of tests running beside this one on the same server.
    worker_url = f"{postgres_url}{'&' if '?' in postgres_url else '?'}application_name={name}"
    proc = _worker(study_file, worker_url, tmp_path, "--heartbeat", "1", "--grace", "30")
    engine = sqlalchemy.create_engine(postgres_url)
    terminated = 0
    for _ in range(2):
        wait_for_training(name, postgres_url, proc, min_epochs=2)
        with engine.connect() as conn:
            terminated += len(conn.execute(sqlalchemy.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = :name AND backend_type = 'client backend'"),
                {"name": name}).fetchall())
        time.sleep(3)
    engine.dispose()
    out, err = ended(proc, 600)
    assert terminated >= 2
    assert proc.returncode == 0, err
    study = optuna.load_study(study_name=name, storage=postgres_url)
    points = _complete_points(study)
    assert len(points) == len(set(points)) == 4
    assert not study.get_trials(states=(TrialState.FAIL, TrialState.RUNNING))
    optuna.delete_study(study_name=name, storage=postgres_url)


def test_the_database_unreachable_for_ten_seconds_mid_trial_loses_nothing(
        tmp_path, image_folder, postgres_url):
    """The worker reaches PostgreSQL through a proxy that drops every connection and refuses
    new ones for 10 s while a trial trains: the worker waits it out and loses nothing."""
    url = sqlalchemy.engine.make_url(postgres_url)
    proxy = CuttableProxy(url.host or "127.0.0.1", url.port or 5432)
    through_proxy = url.set(host="127.0.0.1", port=proxy.port).render_as_string(
        hide_password=False)
    name = f"outage-{uuid.uuid4().hex[:8]}"
    study_file = write_study(tmp_path / "s.toml", data=image_folder, name=name, epochs=8)
    try:
        proc = _worker(study_file, through_proxy, tmp_path, "--heartbeat", "1", "--grace",
                       "60")
        victim = wait_for_training(name, postgres_url, proc, min_epochs=2)
        dropped = proxy.cut()
        time.sleep(10)
        proxy.restore()
        out, err = ended(proc, 600)
    finally:
        proxy.close()
    assert dropped >= 1
    assert proc.returncode == 0, err
    assert err.count("the study database is unreachable") >= 1, err
    assert "reachable again after" in err
    study = optuna.load_study(study_name=name, storage=postgres_url)
    trial = study.trials[victim.number]
    assert trial.state == TrialState.COMPLETE  # the trial in flight finished, not re-run
    assert len(trial.intermediate_values) == 8  # every epoch's report reached the database
    points = _complete_points(study)
    assert len(points) == len(set(points)) == 4  # lost: 0, duplicates: 0
    assert not study.get_trials(states=(TrialState.FAIL, TrialState.RUNNING,
                                        TrialState.WAITING))
    optuna.delete_study(study_name=name, storage=postgres_url)


STARTUP = """
import sys, time
from hpo.config import load_study_config
from hpo.storage import open_storage, close_storage
from hpo.study import open_study
start = float(sys.argv[3])
while time.time() < start:
    time.sleep(0.001)
storage = open_storage(sys.argv[2])
open_study(load_study_config(sys.argv[1]), storage, sampler="grid")
close_storage(storage)
"""


def test_eight_workers_starting_at_once_on_an_empty_database(tmp_path, image_folder,
                                                             postgres_url):
    database = f"hpo_race_{uuid.uuid4().hex[:8]}"
    admin = sqlalchemy.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f"CREATE DATABASE {database}"))
    url = sqlalchemy.engine.make_url(postgres_url).set(database=database)
    url_text = url.render_as_string(hide_password=False)
    study_file = write_study(tmp_path / "s.toml", data=image_folder, name="race")
    try:
        start = time.time() + 8
        procs = [subprocess.Popen([sys.executable, "-c", STARTUP, str(study_file), url_text,
                                   str(start)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for _ in range(8)]
        results = [ended(p, 120) for p in procs]
        assert [p.returncode for p in procs] == [0] * 8, [r[1][-800:] for r in results]
        check = sqlalchemy.create_engine(url_text)
        with check.connect() as conn:
            left = conn.execute(sqlalchemy.text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = :d AND "
                "pid <> pg_backend_pid()"), {"d": database}).scalar()
            studies = conn.execute(sqlalchemy.text("SELECT study_name FROM studies")).fetchall()
            schema_versions = conn.execute(sqlalchemy.text(
                "SELECT count(*) FROM version_info")).scalar()
        check.dispose()
        assert left == 0  # every worker gave its connections back
        assert [row[0] for row in studies] == ["race"]
        assert schema_versions == 1
    finally:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d"),
                {"d": database})
            conn.execute(sqlalchemy.text(f"DROP DATABASE IF EXISTS {database}"))
        admin.dispose()


def _point(trial: optuna.trial.FrozenTrial) -> tuple:
    return tuple(sorted(trial.params.items()))


def _wait_for_retry(name: str, storage: str, proc: subprocess.Popen[str],
                    victim: optuna.trial.FrozenTrial) -> optuna.trial.FrozenTrial:
    """The retry of ``victim`` once it trains (an epoch reported) in ``proc``."""
    from hpo.storage import StorageOptions, open_storage

    rdb = open_storage(storage, StorageOptions())
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            for trial in optuna.load_study(study_name=name, storage=rdb).get_trials(
                    states=(TrialState.RUNNING,)):
                if trial.number != victim.number and trial.intermediate_values:
                    return trial
            time.sleep(0.2)
    finally:
        rdb.engine.dispose()
    raise AssertionError(f"no retry of trial {victim.number} started training")


@pytest.mark.parametrize("retry", ["running", "done"])
def test_a_paused_worker_that_resumes_after_its_retry_was_taken_adds_no_second_result(
        tmp_path, image_folder, postgres_url, retry):
    """SIGSTOP (a suspended laptop or VM, a network partition) past the grace: the trial is
    failed and its retry taken by another worker. SIGCONT while that retry runs, or after
    it finished: the point ends with exactly one COMPLETE trial, and the late result is a
    record on the original trial, not a second result."""
    import signal

    name = f"pause-{uuid.uuid4().hex[:8]}"
    study_file = write_study(tmp_path / "s.toml", data=image_folder, name=name, epochs=6)
    beat = ("--heartbeat", "1", "--grace", "2", "--n-trials", "1", "--keep-models", "0",
            "--no-figures")
    paused = _worker(study_file, postgres_url, tmp_path, *beat)
    victim = wait_for_training(name, postgres_url, paused)
    os.kill(paused.pid, signal.SIGSTOP)
    try:
        time.sleep(3.5)  # past the grace: its heartbeat is stale
        other = _worker(study_file, postgres_url, tmp_path, *beat)  # reaps, takes the retry
        if retry == "running":
            taken = _wait_for_retry(name, postgres_url, other, victim)
            assert taken.params == victim.params
        else:
            _, err = ended(other, 600)
            assert other.returncode == 0, err
    finally:
        os.kill(paused.pid, signal.SIGCONT)
    _, err = ended(paused, 600)
    assert paused.returncode == 0, err
    assert "its late result is kept as a record on trial" in err
    if retry == "running":
        ended(other, 600)
        assert other.returncode == 0
    study = optuna.load_study(study_name=name, storage=postgres_url)
    same = [t for t in study.trials if _point(t) == _point(victim)]
    assert [t.state for t in same].count(TrialState.COMPLETE) == 1
    original = study.trials[victim.number]
    assert original.state == TrialState.FAIL
    assert isinstance(original.user_attrs["late_result"], float)
    assert original.user_attrs["late_result_at"]
    assert original.user_attrs["late_result_superseded_by"] == \
        [t.number for t in same if t.state == TrialState.COMPLETE]
    assert not any("recovered_from_trial" in t.user_attrs for t in study.trials)
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
    optuna.delete_study(study_name=name, storage=postgres_url)


def test_reap_refuses_a_grace_shorter_than_the_workers_heartbeat_and_spares_a_live_trial(
        tmp_path, image_folder, postgres_url):
    """`hpo reap --grace 2` beside a worker beating every 5 s failed its live trial; now it
    is refused (one line, exit 2), and a grace the heartbeat allows fails nothing live."""
    import signal

    name = f"reapgrace-{uuid.uuid4().hex[:8]}"
    study_file = write_study(tmp_path / "s.toml", data=image_folder, name=name, epochs=500)
    proc = _worker(study_file, postgres_url, tmp_path, "--heartbeat", "5", "--n-trials", "1",
                   "--keep-models", "0", "--no-figures")
    try:
        live = wait_for_training(name, postgres_url, proc)
        refused = run_here("reap", name, "--storage", postgres_url, "--grace", "2",
                           cwd=tmp_path)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
        assert "--grace 2 s would fail live trials" in refused.stderr
        assert "--grace 10 or more" in refused.stderr
        allowed = run_here("reap", name, "--storage", postgres_url, "--grace", "10",
                           cwd=tmp_path)
        assert allowed.returncode == 0, allowed.stderr
        assert "reaped 0 trial(s)" in allowed.stdout
        study = optuna.load_study(study_name=name, storage=postgres_url)
        assert study.trials[live.number].state == TrialState.RUNNING  # 500 epochs: alive
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)  # the worker fails its own trial and exits
        ended(proc, 120)
    optuna.delete_study(study_name=name, storage=postgres_url)
