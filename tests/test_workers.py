"""Many workers on one study, on the real PostgreSQL: exactly-once grids and crash safety."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from hpo.testing import write_study
from tests.conftest import ended, run_here, wait_for_training

pytestmark = pytest.mark.postgres


def _points(trials: list[optuna.trial.FrozenTrial]) -> list[tuple]:
    return [tuple(sorted(t.params.items())) for t in trials]


def _worker(study_file: Path, storage: str, cwd: Path, name: str,
            *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "hpo", "worker", "--study", str(study_file), "--heartbeat", "1",
         "--grace", "3", "--quiet", "--worker-name", name, *extra],
        cwd=cwd, env={**os.environ, "HPO_STORAGE": storage}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)


@pytest.mark.keras_backend("jax")  # processes and storage: tests/conftest.py
def test_a_worker_killed_mid_trial_is_reclaimed_by_the_others(tmp_path, image_folder,
                                                              postgres_url):
    name = f"kill-{uuid.uuid4().hex[:8]}"
    study_file = write_study(tmp_path / "s.toml", data=image_folder, name=name, epochs=8)
    first = _worker(study_file, postgres_url, tmp_path, "a")
    victim = wait_for_training(name, postgres_url, first)
    second = _worker(study_file, postgres_url, tmp_path, "b")
    os.kill(first.pid, signal.SIGKILL)
    first.communicate()
    out, err = ended(second, 600)
    assert second.returncode == 0, err
    study = optuna.load_study(study_name=name, storage=postgres_url)
    assert study.trials[victim.number].state == TrialState.FAIL
    complete = _points(study.get_trials(states=(TrialState.COMPLETE,)))
    assert len(complete) == len(set(complete)) == 4
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
    optuna.delete_study(study_name=name, storage=postgres_url)


def test_reap_fails_a_trial_whose_host_went_silent(tmp_path, postgres_url):
    name = f"reap-{uuid.uuid4().hex[:8]}"
    storage = optuna.storages.RDBStorage(postgres_url, heartbeat_interval=1, grace_period=1)
    study = optuna.create_study(study_name=name, storage=storage)
    trial = study.ask()
    trial.suggest_float("x", 0, 1)
    trial.set_user_attr("worker", {"host": "another-host", "pid": "1"})
    storage.record_heartbeat(trial._trial_id)
    time.sleep(2.5)
    result = run_here("reap", name, "--storage", postgres_url, "--grace", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"reaped 1 trial(s): {trial.number}" in result.stdout
    reloaded = optuna.load_study(study_name=name, storage=postgres_url)
    assert reloaded.trials[trial.number].state == TrialState.FAIL
    retry = reloaded.get_trials(states=(TrialState.WAITING,))
    assert len(retry) == 1 and retry[0].params == {"x": trial.params["x"]}
    optuna.delete_study(study_name=name, storage=postgres_url)


@pytest.mark.keras_backend("jax")  # the supervisor's part: a TensorFlow worker's own in test_signals/test_crash
def test_ctrl_c_stops_every_worker_and_leaves_nothing_running(tmp_path, image_folder,
                                                              postgres_url):
    name = f"int-{uuid.uuid4().hex[:8]}"
    study_file = write_study(tmp_path / "s.toml", data=image_folder, name=name, epochs=25)
    proc = subprocess.Popen([sys.executable, "-m", "hpo", "run", "--study", str(study_file),
                             "--workers", "2", "--quiet"], cwd=tmp_path,
                            env={**os.environ, "HPO_STORAGE": postgres_url},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    wait_for_training(name, postgres_url, proc)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    out, err = ended(proc, 120)
    assert proc.returncode != 0
    assert "Traceback" not in err
    assert "interrupted" in err
    study = optuna.load_study(study_name=name, storage=postgres_url)
    assert not study.get_trials(states=(TrialState.RUNNING,))
    optuna.delete_study(study_name=name, storage=postgres_url)


def test_a_worker_with_an_edited_grid_is_refused(tmp_path, image_folder, postgres_url):
    name = f"edit-{uuid.uuid4().hex[:8]}"
    study_file = write_study(tmp_path / "s.toml", data=image_folder, name=name)
    first = run_here("worker", "--study", str(study_file), "--storage", postgres_url,
                     "--n-trials", "1", "--quiet", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    edited = write_study(tmp_path / "edited.toml", data=image_folder, name=name,
                         extra_grid="batch_size = [8]")
    refused = run_here("worker", "--study", str(edited), "--storage", postgres_url,
                       cwd=tmp_path)
    assert refused.returncode == 2
    assert "was created from a different grid" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert len(optuna.load_study(study_name=name, storage=postgres_url).trials) == 1
    optuna.delete_study(study_name=name, storage=postgres_url)


def test_passwords_are_masked_in_studies_listing(tmp_path, postgres_url):
    with_password = postgres_url.replace("://postgres@", "://postgres:hunter2@", 1)
    if with_password == postgres_url:
        pytest.skip("HPO_TEST_POSTGRES_URL has no 'postgres@' user part to add a password to")
    result = run_here("studies", "--storage", with_password, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "hunter2" not in result.stdout + result.stderr
    assert "postgres:***@" in result.stdout


def test_gpus_all_without_a_gpu_is_a_clear_error(tmp_path, tiny_study):
    result = run_here("run", "--study", str(tiny_study), "--gpus", "all", cwd=tmp_path,
                      env={"PATH": "/usr/bin:/bin", "CUDA_VISIBLE_DEVICES": ""})
    assert result.returncode == 2
    assert "found no GPU" in result.stderr
