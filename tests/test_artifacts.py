"""Kept models: written atomically in the background, pruned to the keep policy and the
disk cap, parts of killed saves removed; `hpo status` shows the disk they take."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from hpo.trial import Artifacts, model_path


def _study(values: list[float], storage: str | None = None) -> optuna.Study:
    study = optuna.create_study(study_name="kept", direction="maximize", storage=storage)
    for value in values:
        study.add_trial(optuna.create_trial(state=TrialState.COMPLETE, value=value))
    return study


def _kept_file(directory: Path, number: int, size: int = 1000) -> Path:
    path = model_path(directory, "kept", number)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    return path


class _FailingModel:
    """Writes half a file, then the disk fills."""

    def save(self, path: Path) -> None:
        Path(path).write_bytes(b"half a model")
        raise OSError(28, "No space left on device")


def test_a_failed_save_leaves_neither_the_model_nor_its_part(tmp_path):
    target = model_path(tmp_path, "kept", 4)
    with pytest.raises(OSError, match="No space"):
        Artifacts.save_model(_FailingModel(), target)
    assert not target.exists()
    assert list(target.parent.iterdir()) == []


def test_a_model_that_would_not_be_kept_is_never_written(tmp_path):
    artifacts = Artifacts(directory=tmp_path, keep_models=2)
    study = _study([0.9, 0.8])
    assert artifacts.model_to_keep(study, 2, 0.7) is None
    assert artifacts.model_to_keep(study, 2, 0.85) == model_path(tmp_path, "kept", 2)
    assert Artifacts(directory=tmp_path, keep_models=0).model_to_keep(study, 2, 1.0) is None


@pytest.mark.parametrize("rdb", [False, True], ids=["in-memory", "sqlite"])
def test_the_disk_cap_removes_kept_models_worst_first_but_never_the_best(tmp_path, rdb):
    study = _study([0.9, 0.8, 0.7, 0.6],
                   f"sqlite:///{tmp_path / 'kept.db'}" if rdb else None)
    for number in range(4):
        _kept_file(tmp_path, number)
    # keep 3 by rank; all models may take 2.5 kB: trial 3 goes by rank, trial 2 by size
    Artifacts(directory=tmp_path, keep_models=3, max_models_gb=2.5e-6).prune_models(study)
    left = sorted(p.name for p in model_path(tmp_path, "kept", 0).parent.iterdir())
    assert left == ["trial-00000.keras", "trial-00001.keras"]
    # a cap below one model still keeps the study's best
    Artifacts(directory=tmp_path, keep_models=3, max_models_gb=1e-9).prune_models(study)
    left = sorted(p.name for p in model_path(tmp_path, "kept", 0).parent.iterdir())
    assert left == ["trial-00000.keras"]


def test_parts_of_dead_saves_are_removed_and_live_ones_kept(tmp_path):
    study = _study([0.9])
    folder = _kept_file(tmp_path, 0).parent
    host = socket.gethostname()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    parts = {
        "dead": folder / f".part-{host}-{dead}-trial-00001.keras",
        "live": folder / f".part-{host}-{os.getpid()}-trial-00002.keras",
        "recent_other_host": folder / ".part-elsewhere-1-trial-00003.keras",
        "old_other_host": folder / ".part-elsewhere-1-trial-00004.keras",
    }
    for part in parts.values():
        part.write_bytes(b"partial")
    os.utime(parts["old_other_host"], (time.time() - 7 * 3600,) * 2)
    removed = Artifacts(directory=tmp_path, keep_models=3).prune_models(study)
    assert sorted(removed) == sorted([parts["dead"], parts["old_other_host"]])
    assert parts["live"].exists() and parts["recent_other_host"].exists()


_SAVER = """
import sys
from pathlib import Path
import keras
from hpo.trial import Artifacts
model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(4096),
                          keras.layers.Dense(4096), keras.layers.Dense(4096)])
target = Path(sys.argv[1])
while True:  # one save after another until killed
    print("saving", flush=True)
    Artifacts.save_model(model, target)
    target.unlink()
"""


def test_kill_9_mid_save_leaves_no_broken_kept_model(tmp_path):
    target = model_path(tmp_path, "kept", 0)
    proc = subprocess.Popen([sys.executable, "-c", _SAVER, str(target)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "saving\n"
        assert proc.stdout.readline() == "saving\n"  # one whole save is done, the next one
        time.sleep(0.05)                             # is writing
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    if target.exists():  # killed between a rename and the next save: a whole model
        import keras

        assert keras.saving.load_model(target).count_params() > 0
        target.unlink()
    parts = list(target.parent.glob(".part-*"))
    removed = Artifacts(directory=tmp_path).prune_models(_study([0.5]))
    assert sorted(removed) == sorted(parts)
    assert list(target.parent.iterdir()) == []


def test_the_gpu_monitor_averages_what_the_gpu_reports_while_fit_runs():
    from hpo.trial._gpu import GpuMonitor

    readings = iter([40.0, 60.0] * 1000)
    with GpuMonitor(lambda: next(readings), interval=0.01) as monitor:
        time.sleep(0.2)
    assert monitor.facts()["gpu_busy_pct"] == pytest.approx(50.0, abs=10.0)  # 40, 60, ...
    with GpuMonitor(None) as idle:  # no GPU: nothing recorded
        time.sleep(0.05)
    assert idle.facts() == {}


def test_no_gpu_reader_on_a_machine_without_an_nvidia_gpu(monkeypatch):
    import shutil

    from hpo.trial._gpu import utilization_reader

    if shutil.which("nvidia-smi"):
        pytest.skip("this machine has nvidia-smi")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert utilization_reader() is None


def test_the_best_models_come_from_one_ordered_query_that_ranks_as_a_sort_does(tmp_path):
    """Ties keep the lower trial number first, in either direction, as the sort did."""
    from hpo.storage import best_trial_numbers, study_id

    values = [0.5, 0.9, 0.7, 0.9, 0.1, 0.7]
    for direction in ("maximize", "minimize"):
        study = optuna.create_study(study_name=direction, direction=direction,
                                    storage=f"sqlite:///{tmp_path / 'rank.db'}")
        for value in values:
            study.add_trial(optuna.create_trial(state=TrialState.COMPLETE, value=value))
        study.add_trial(optuna.create_trial(state=TrialState.FAIL))
        ranked = sorted(study.get_trials(states=(TrialState.COMPLETE,)), key=lambda t: t.value,
                        reverse=direction == "maximize")[:4]
        top = best_trial_numbers(study._storage, study_id(study), 4,
                                 maximize=direction == "maximize")
        assert top == [(t.number, t.value) for t in ranked]


# -- artifacts belong to a study, not to a name (issue 25, item 5) -----------------------------

def test_the_same_study_name_in_two_storages_keeps_each_others_models_and_figures(
        tiny_study, tmp_path):
    """The README's PostgreSQL section invites a second storage run from the same folder:
    its study of the same name once deleted the first one's best models and overwrote
    another (trial 0 of both wrote models/NAME/trial-00000.keras)."""
    import hpo
    from hpo.trial import export_model, models_folder

    artifacts = tmp_path / "artifacts"
    first = hpo.run(tiny_study, storage=f"sqlite:///{tmp_path / 'a.db'}", n_trials=2,
                    artifacts=artifacts, keep_models=2)
    kept = {t.number: Path(t.user_attrs["model_path"]) for t in first.trials}
    before = {n: p.read_bytes() for n, p in kept.items()}
    assert len(before) == 2
    second = hpo.run(tiny_study, storage=f"sqlite:///{tmp_path / 'b.db'}", n_trials=2,
                     artifacts=artifacts, keep_models=1, seed=7)
    assert models_folder(artifacts, first) != models_folder(artifacts, second)
    assert {n: p.read_bytes() for n, p in kept.items()} == before  # neither gone nor replaced
    for trial in first.trials:  # each exports its own
        number, _ = export_model(first, artifacts, tmp_path / f"a{trial.number}.keras",
                                 model=trial.number)
        assert (tmp_path / f"a{number}.keras").read_bytes() == before[number]
    export_model(second, artifacts, tmp_path / "b.keras")
    assert (tmp_path / "b.keras").read_bytes() not in before.values()
    for study in (first, second):  # the figures are filed by artifact id: all still there
        for trial in study.trials:
            for meta in optuna.artifacts.get_all_artifact_meta(trial, storage=study._storage):
                assert (artifacts / meta.artifact_id).is_file()


def _export_study(tmp_path: Path) -> tuple[optuna.Study, Path]:
    """A study with a trial of each kind ``hpo export`` may be asked for; its models as hpo
    files them (its identity recorded as hpo records it)."""
    from hpo.trial import model_path

    directory = tmp_path / "artifacts"
    study = optuna.create_study(study_name="kept", direction="maximize",
                                storage=f"sqlite:///{tmp_path / 'e.db'}")
    study.set_user_attr("hpo:study_uid", "0123456789abcdef0123456789abcdef")
    path = {n: str(model_path(directory, study, n)) for n in range(6)}
    elsewhere = tmp_path / "other" / "models" / "kept-01234567" / "trial-00004.keras"
    elsewhere.parent.mkdir(parents=True)
    elsewhere.write_bytes(b"model 4")
    trials = [
        optuna.create_trial(state=TrialState.COMPLETE, value=0.9,  # 0: kept
                            user_attrs={"model_path": path[0]}),
        optuna.create_trial(state=TrialState.FAIL,  # 1: failed
                            user_attrs={"fail_reason": "NonFiniteLossError: loss is nan"}),
        optuna.create_trial(state=TrialState.COMPLETE, value=0.1),  # 2: never kept
        optuna.create_trial(state=TrialState.COMPLETE, value=0.5,  # 3: kept, then pruned
                            user_attrs={"model_path": path[3]}),
        optuna.create_trial(state=TrialState.COMPLETE, value=0.8,  # 4: another --artifacts
                            user_attrs={"model_path": str(elsewhere)}),
        optuna.create_trial(state=TrialState.PRUNED, value=0.2),  # 5: pruned
    ]
    for trial in trials:
        study.add_trial(trial)
    Path(path[0]).parent.mkdir(parents=True)
    Path(path[0]).write_bytes(b"model 0")
    return study, directory


@pytest.mark.parametrize(("model", "reason"), [
    (9, "has no trial 9 (received trial 9, expected one of its trials 0 to 5)"),
    (1, "trial 1 of 'kept' failed (NonFiniteLossError: loss is nan): only a completed trial"),
    (5, "trial 5 of 'kept' was pruned: only a completed trial has a trained model"),
    (2, ("trial 2 was not among the keep_models best trials when it ended, so its model was "
         "never saved")),
    (3, "was kept in"),
    (4, "the model of trial 4 was kept in another artifacts folder"),
])
def test_export_names_why_a_model_is_missing(tmp_path, model, reason):
    from hpo.errors import StudyError
    from hpo.trial import export_model

    study, directory = _export_study(tmp_path)
    with pytest.raises(StudyError) as caught:
        export_model(study, directory, tmp_path / "out.keras", model=model)
    assert reason in str(caught.value)
    if model == 3:
        assert "and then deleted: it fell out of the keep_models best" in str(caught.value)
    if model == 4:
        assert f"pass artifacts {tmp_path / 'other'}" in str(caught.value)
    assert "rerun with a larger" not in str(caught.value) or model in (2, 3)
    assert not (tmp_path / "out.keras").exists()
    assert export_model(study, directory, tmp_path / "best.keras") == \
        (0, tmp_path / "best.keras")
    assert (tmp_path / "best.keras").read_bytes() == b"model 0"


def test_a_study_created_before_it_had_an_identity_keeps_its_models_where_they_are(tmp_path):
    """A study stored before hpo recorded ``hpo:study_uid`` (or resumed since: it is never
    given one once it has trials) keeps the layout models/NAME, where its kept models are
    found, pruned and exported."""
    from hpo.trial import export_model, models_folder

    study = _study([0.2, 0.9, 0.5], storage=f"sqlite:///{tmp_path / 'old.db'}")
    assert models_folder(tmp_path, study) == tmp_path / "models" / "kept"
    for number in range(3):
        _kept_file(tmp_path, number)
    assert set(Artifacts(directory=tmp_path, keep_models=1).prune_models(study)) == \
        {model_path(tmp_path, "kept", 0), model_path(tmp_path, "kept", 2)}
    assert sorted(p.name for p in (tmp_path / "models" / "kept").iterdir()) == \
        ["trial-00001.keras"]
    assert export_model(study, tmp_path, tmp_path / "out.keras") == (1, tmp_path / "out.keras")
