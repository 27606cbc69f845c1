"""Ctrl-C and kill -9 of a worker lose at most the trial in flight, which is then re-run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from hpo.testing import write_study
from tests.conftest import ended, run_here, wait_for_training


def _start(study: Path, storage: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "hpo", "run", "--study", str(study),
                             "--storage", storage, "--heartbeat", "1", "--quiet"],
                            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _long_study(tmp_path: Path, image_folder: Path, name: str) -> Path:
    """Twenty epochs a trial (time to stop it mid-trial), on a grid of two points: the
    resumed run trains every point left, at the same twenty epochs (the grid's hash holds
    them), so each point more costs the suite a whole trial."""
    path = write_study(tmp_path / f"{name}.toml", data=image_folder, name=name, epochs=20)
    text = path.read_text()
    assert text.count('optimizer = ["Adam", "SGD"]\n') == 1
    path.write_text(text.replace('optimizer = ["Adam", "SGD"]\n', 'optimizer = ["Adam"]\n'))
    return path


def test_ctrl_c_fails_the_running_trial_cleanly_and_resume_reruns_it(tmp_path, image_folder):
    study_file = _long_study(tmp_path, image_folder, "sigint")
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    proc = _start(study_file, storage, tmp_path)
    victim = wait_for_training("sigint", storage, proc)
    proc.send_signal(signal.SIGINT)
    out, err = ended(proc, 120)
    assert proc.returncode == 130, (out, err)
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("hpo: error: interrupted")
    study = optuna.load_study(study_name="sigint", storage=storage)
    assert not study.get_trials(states=(TrialState.RUNNING,))
    assert study.trials[victim.number].state == TrialState.FAIL

    # Resume the same file: the interrupted grid point is trained again (in this process:
    # what is under test is what the stopped process left).
    resumed = run_here("run", "--study", str(study_file), "--storage", storage, "--quiet",
                       cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    study = optuna.load_study(study_name="sigint", storage=storage)
    complete = {(t.params["optimizer"], t.params["learning_rate"])
                for t in study.get_trials(states=(TrialState.COMPLETE,))}
    assert len(complete) == 2  # both grid points
    assert (victim.params["optimizer"], victim.params["learning_rate"]) in complete
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))


@pytest.mark.keras_backend("jax")  # no handler runs: any backend (tests/conftest.py)
def test_kill_9_leaves_no_trial_running_forever(tmp_path, image_folder):
    study_file = _long_study(tmp_path, image_folder, "sigkill")
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    proc = _start(study_file, storage, tmp_path)
    victim = wait_for_training("sigkill", storage, proc)
    os.kill(proc.pid, signal.SIGKILL)
    ended(proc, 60)
    study = optuna.load_study(study_name="sigkill", storage=storage)
    assert study.trials[victim.number].state == TrialState.RUNNING  # nobody could mark it

    resumed = subprocess.run([sys.executable, "-m", "hpo", "run", "--study", str(study_file),
                              "--storage", storage, "--quiet"], cwd=tmp_path,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert "marked 1 lost trial(s) FAIL and re-queued them" in resumed.stderr
    study = optuna.load_study(study_name="sigkill", storage=storage)
    killed = study.trials[victim.number]
    assert killed.state == TrialState.FAIL
    assert "died while the trial ran" in killed.user_attrs["fail_reason"]
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    points = [(t.params["optimizer"], t.params["learning_rate"]) for t in complete]
    assert len(points) == len(set(points)) == 2  # every point once, no duplicate
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
    # read by stock Optuna: the killed worker's tokens left with its reaping
    assert not [k for t in study.trials for k in t.system_attrs if k.startswith("hpo:")]


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as listing:
        return [int(child) for child in listing.read().split()]


@pytest.mark.keras_backend("jax")  # processes: tests/conftest.py
def test_a_trial_child_killed_under_isolate_is_failed_and_requeued_by_its_parent(
        tmp_path, image_folder):
    """``hpo worker --isolate`` runs each trial in a child; the child is ``kill -9``'d
    mid-trial (the OOM killer's way): the parent exits with the child's status and, before
    it does, fails the trial and re-queues its point, so no trial is left RUNNING."""
    study_file = _long_study(tmp_path, image_folder, "isolated")
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    proc = subprocess.Popen([sys.executable, "-m", "hpo", "worker", "--study", str(study_file),
                             "--storage", storage, "--isolate", "--quiet"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    victim = wait_for_training("isolated", storage, proc)
    [child] = _children(proc.pid)
    os.kill(child, signal.SIGKILL)
    out, err = ended(proc, 120)
    assert proc.returncode == 137, (out, err)
    assert f"marked 1 lost trial(s) FAIL and re-queued them: {victim.number}" in err
    study = optuna.load_study(study_name="isolated", storage=storage)
    assert study.trials[victim.number].state == TrialState.FAIL
    assert not study.get_trials(states=(TrialState.RUNNING,))
    [retry] = study.get_trials(states=(TrialState.WAITING,))
    assert retry.params == victim.params
    # hpo's tokens are gone; the run that took each trial stays (hpo:run_id, n_trials)
    assert not [k for t in study.trials for k in t.system_attrs
                if k.startswith("hpo:") and k != "hpo:run_id"]
