"""Every finished trial's dashboard note: written with its end, read by optuna-dashboard."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import optuna_dashboard
import sqlalchemy
from optuna.trial import TrialState

from hpo.storage import (
    NOTE_LIMIT,
    StorageOptions,
    close_storage,
    open_storage,
    set_trial_notes,
    set_user_attrs,
    trial_id,
    unwrap_storage,
)
from hpo.study import keep_trial_notes, reap_dead_trials, trial_note


def _note(url: str, name: str, number: int) -> str:
    """Trial ``number``'s note, as the stock optuna-dashboard reads it (a plain storage)."""
    study = optuna.load_study(study_name=name, storage=url)
    frozen = study.get_trials(deepcopy=False)[number]
    return optuna_dashboard.get_note(optuna.trial.Trial(study, frozen._trial_id))


def _started(study: optuna.Study) -> optuna.Trial:
    trial = study.ask()
    trial.suggest_float("learning_rate", 1e-4, 1e-1, log=True)
    trial.suggest_categorical("optimizer", ["Adam", "SGD"])
    return trial


def test_complete_pruned_and_failed_trials_get_their_notes_in_the_end_transaction(tmp_path):
    url = f"sqlite:///{tmp_path / 'n.db'}"
    storage = open_storage(url, StorageOptions())
    study = optuna.create_study(study_name="notes", storage=storage, direction="maximize")
    keep_trial_notes(study, ["val_accuracy"])
    commits = []
    sqlalchemy.event.listen(unwrap_storage(storage).engine, "commit",
                            lambda *args: commits.append(1))

    done = _started(study)
    set_user_attrs(storage, trial_id(done), {
        "test_accuracy": 0.75, "roc_auc": 0.8125, "tp": 3, "tn": 4, "test_size": 8,
        "epochs_trained": 3, "result_epoch": 2, "result_epoch_policy": "best",
        "best_epoch": 2, "train_time_s": 1.5, "gpu_busy_pct": 81.5,
        "gpu_peak_memory_mb": 512.0})
    set_user_attrs(storage, trial_id(done), {"wall_time_s": 2.25}, with_end=True)
    commits.clear()
    study.tell(done, 0.75)
    assert len(commits) == 1  # the end, its records and its note: one transaction

    pruned = _started(study)
    pruned.report(0.4, 0)
    study.tell(pruned, state=TrialState.PRUNED)

    failed = _started(study)
    set_user_attrs(storage, trial_id(failed), {"fail_reason": "NonFiniteLossError: loss | nan"},
                   with_end=True)
    study.tell(failed, state=TrialState.FAIL)
    close_storage(storage)

    note = _note(url, "notes", 0)
    assert note.startswith("### Trial 0: COMPLETE\n")
    assert "**val_accuracy** 0.7500" in note
    assert "| parameter | value |" in note and "| optimizer |" in note
    assert "- test: accuracy 0.7500, ROC AUC 0.8125, TP 3, TN 4 (8 images)" in note
    assert "- epochs: 3 run, numbers from epoch 2 (policy best), best epoch 2" in note
    assert "- time: wall 2.2 s, fit 1.5 s" in note or "- time: wall 2.3 s, fit 1.5 s" in note
    assert "- GPU: busy 81.5 %, peak memory 512.0 MiB" in note
    assert "fail reason" not in note
    pruned_note = _note(url, "notes", 1)
    assert pruned_note.startswith("### Trial 1: PRUNED\n")
    assert "**val_accuracy** 0.4000 (at its last reported epoch)" in pruned_note
    failed_note = _note(url, "notes", 2)
    assert failed_note.startswith("### Trial 2: FAIL\n")
    assert "- fail reason: NonFiniteLossError: loss \\| nan" in failed_note
    # what Optuna itself reads of the study is unchanged
    assert [t.state for t in optuna.load_study(study_name="notes", storage=url).trials] == \
        [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL]


def test_trials_reaped_by_another_process_get_notes_with_why(tmp_path):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    worker = open_storage(url, StorageOptions(heartbeat_interval=1, grace_period=1))
    study = optuna.create_study(study_name="reaped", storage=worker)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    gone = _started(study)  # its worker process died: found by its pid, on this host
    set_user_attrs(worker, trial_id(gone), {"worker": {"host": socket.gethostname(),
                                                       "pid": dead}})
    stale = _started(study)  # its worker elsewhere stopped beating
    worker.record_heartbeat(trial_id(stale))
    time.sleep(2.6)  # past the 1 s grace by SQLite's whole-second clock
    # another worker, or 'hpo reap': a storage of its own, no note renderer installed yet
    reaper = open_storage(url, StorageOptions(heartbeat_interval=1, grace_period=1))
    reaped = reap_dead_trials(optuna.load_study(study_name="reaped", storage=reaper))
    assert sorted(reaped) == [0, 1]
    close_storage(reaper)
    assert f"- fail reason: worker process {dead} on" in _note(url, "reaped", 0)
    note = _note(url, "reaped", 1)
    assert note.startswith("### Trial 1: FAIL\n")
    # hpo's reaper names the heartbeat's age (Optuna's own fail_stale_trials, under
    # Study.optimize, records no reason: the note then says "its heartbeat stopped")
    assert "- fail reason: no heartbeat for " in note and "its worker was lost" in note


def test_a_note_written_in_the_dashboard_while_the_trial_ran_is_kept(tmp_path):
    url = f"sqlite:///{tmp_path / 'k.db'}"
    storage = open_storage(url, StorageOptions())
    study = optuna.create_study(study_name="kept", storage=storage)
    keep_trial_notes(study, ["val_loss"])
    trial = _started(study)
    optuna_dashboard.save_note(trial, "mine: **keep**")
    study.tell(trial, 0.5)
    assert _note(url, "kept", 0) == "mine: **keep**"


def test_a_trial_added_finished_and_a_journal_trial_get_notes(tmp_path):
    url = f"sqlite:///{tmp_path / 'a.db'}"
    storage = open_storage(url, StorageOptions())
    study = optuna.create_study(study_name="added", storage=storage)
    keep_trial_notes(study, ["val_accuracy"])
    study.add_trial(optuna.create_trial(  # how a recovered result is kept (_loop)
        state=TrialState.COMPLETE, value=0.5, params={"x": 1.0},
        distributions={"x": optuna.distributions.FloatDistribution(0, 2)},
        user_attrs={"recovered_from_trial": 7}))
    close_storage(storage)
    assert "result recovered from trial 7" in _note(url, "added", 0)

    journal = open_storage(f"journal:///{tmp_path / 'j.log'}")
    study = optuna.create_study(study_name="journal", storage=journal)
    keep_trial_notes(study, ["val_accuracy"])
    trial = _started(study)
    study.tell(trial, state=TrialState.FAIL)
    reread = open_storage(f"journal:///{tmp_path / 'j.log'}")
    loaded = optuna.load_study(study_name="journal", storage=reread)
    assert optuna_dashboard.get_note(optuna.trial.Trial(loaded, 0)).startswith(
        "### Trial 0: FAIL\n")


def test_a_long_note_is_one_piece_cut_at_a_line_and_a_failing_renderer_costs_no_trial(
        tmp_path, caplog):
    frozen = optuna.create_trial(state=TrialState.COMPLETE, value=1.0,
                                 params={f"p{i}": "x" * 40 for i in range(80)},
                                 distributions={f"p{i}": optuna.distributions.
                                                CategoricalDistribution(["x" * 40])
                                                for i in range(80)})
    assert len(trial_note(frozen)) > NOTE_LIMIT
    url = f"sqlite:///{tmp_path / 'l.db'}"
    storage = open_storage(url, StorageOptions())
    study = optuna.create_study(study_name="long", storage=storage)
    keep_trial_notes(study)
    study.add_trial(frozen)
    note = _note(url, "long", 0)
    assert len(note) <= NOTE_LIMIT and note.endswith("|\n…")

    def broken(trial: optuna.trial.FrozenTrial, stale: bool) -> str:
        raise KeyError("oops")

    set_trial_notes(storage, broken)
    study.tell(study.ask(), 2.0)
    assert study.trials[-1].state == TrialState.COMPLETE
    assert _note(url, "long", 1) == ""
    assert "could not write the dashboard note of trial 1" in caplog.text


def test_a_study_with_notes_reads_as_before_in_optuna_and_its_cli(tmp_path):
    url = f"sqlite:///{tmp_path / 'c.db'}"
    storage = open_storage(url, StorageOptions())
    study = optuna.create_study(study_name="cli", storage=storage)
    keep_trial_notes(study, ["val_accuracy"])
    study.tell(_started(study), 0.5)
    close_storage(storage)
    assert optuna.load_study(study_name="cli", storage=url).best_value == 0.5
    cli = Path(sys.executable).parent / "optuna"
    shown = subprocess.run([str(cli), "trials", "--study-name", "cli", "--storage", url,
                            "-f", "json"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert [t["state"] for t in json.loads(shown.stdout)] == ["COMPLETE"]
