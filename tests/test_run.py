"""Runs real (tiny) studies in-process through the Python API."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

import hpo
from hpo.config import load_study_config
from hpo.errors import StudyError
from hpo.trial import NanGuard, NonFiniteLossError


def test_a_grid_runs_every_point_and_records_results(tiny_study, sqlite_url):
    study = hpo.run(tiny_study, storage=sqlite_url)
    assert isinstance(study, optuna.Study)
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    points = {(t.params["optimizer"], t.params["learning_rate"]) for t in trials}
    assert points == {(o, lr) for o in ("Adam", "SGD") for lr in (0.01, 0.001)}
    for t in trials:
        attrs = t.user_attrs
        assert 0.0 <= t.value <= 1.0
        assert t.value == attrs["history"]["val_accuracy"][-1]  # the final epoch's
        assert (attrs["result_epoch"], attrs["result_epoch_policy"]) == (1, "final")
        assert len(attrs["history"]["loss"]) == attrs["epochs_trained"] == 1
        matrix = attrs["confusion_matrix"]
        assert sum(map(sum, matrix)) == attrs["test_size"]
        assert attrs["tp"] == matrix[1][1] and attrs["tn"] == matrix[0][0]
        assert attrs["test_accuracy"] == pytest.approx(
            (matrix[0][0] + matrix[1][1]) / attrs["test_size"])
        assert 0.0 <= attrs["roc_auc"] <= 1.0
        assert attrs["n_params"] > 0
        assert attrs["classes"] == ["cats", "dogs"]
        assert attrs["precision"] == "float32"
        assert t.intermediate_values  # reported per epoch for pruners and the dashboard
        # what the trial did with its time; on a CPU no GPU figure at all
        assert 0 < attrs["outside_fit_s"] < attrs["wall_time_s"]
        assert attrs["outside_fit_s"] == pytest.approx(
            attrs["wall_time_s"] - attrs["train_time_s"], abs=2e-3)
        images = attrs["images_per_s"] * attrs["train_time_s"] / attrs["epochs_trained"]
        assert 1 <= round(images) < 48 and abs(images - round(images)) < 0.5  # of 48 images
        assert not {"gpu_busy_pct", "gpu_peak_memory_mb"} & set(attrs)
    # one model built, then reused (or a second one while the first is being saved)
    assert [t.user_attrs["model_reused"] for t in trials].count(False) <= 2
    assert trials[-1].user_attrs["model_reused"]
    # The stripes are easy: the best trial learned them.
    assert study.best_value >= 0.8


def test_running_again_resumes_and_trains_nothing_twice(tiny_study, sqlite_url):
    hpo.run(tiny_study, storage=sqlite_url, n_trials=3, figures=False)
    config = load_study_config(tiny_study)
    stored = optuna.load_study(study_name=config.name, storage=sqlite_url)
    assert len(stored.trials) == 3
    hpo.run(tiny_study, storage=sqlite_url, figures=False)
    stored = optuna.load_study(study_name=config.name, storage=sqlite_url)
    assert len(stored.trials) == 4
    assert {t.state for t in stored.trials} == {TrialState.COMPLETE}
    hpo.run(tiny_study, storage=sqlite_url, figures=False)  # complete: nothing more
    assert len(optuna.load_study(study_name=config.name, storage=sqlite_url).trials) == 4


def test_a_failing_trial_is_recorded_and_the_search_goes_on(tiny_study, sqlite_url,
                                                          monkeypatch):
    from hpo.trial import _objective as objective_module

    real_train = objective_module.Objective._train

    def flaky(self, trial, recorder, params, dataset, started, **kwargs):
        if params.optimizer == "SGD" and params.learning_rate == 0.01:
            raise NonFiniteLossError("loss became nan at epoch 1, batch 1")
        return real_train(self, trial, recorder, params, dataset, started, **kwargs)

    monkeypatch.setattr(objective_module.Objective, "_train", flaky)
    study = hpo.run(tiny_study, storage=sqlite_url, figures=False)
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    # Tried, then re-run once (retry_failed=1, the default), then given up on.
    assert len(failed) == 2
    assert {t.user_attrs["fail_reason"] for t in failed} == \
        {"NonFiniteLossError: loss became nan at epoch 1, batch 1"}
    assert {(t.params["optimizer"], t.params["learning_rate"]) for t in failed} == \
        {("SGD", 0.01)}
    assert sum(t.state == TrialState.COMPLETE for t in study.trials) == 3
    # Resuming does not try a given-up point again ...
    study = hpo.run(tiny_study, storage=sqlite_url, figures=False)
    assert len(study.trials) == 5
    # ... unless asked to, and then it completes once the fault is gone.
    monkeypatch.undo()
    study = hpo.run(tiny_study, storage=sqlite_url, retry_failed=2, figures=False)
    assert sum(t.state == TrialState.COMPLETE for t in study.trials) == 4
    assert len(study.trials) == 6


def test_a_tpe_search_explores_the_space(tiny_study, sqlite_url):
    study = hpo.run(tiny_study, sampler="tpe", storage=sqlite_url, n_trials=3,
                    study_name="tpe-run", figures=False)
    assert len(study.trials) == 3
    for t in study.trials:
        assert 1e-4 <= t.params["learning_rate"] <= 0.1
        assert ("momentum" in t.params) == (t.params["optimizer"] == "SGD")


def test_an_edited_grid_is_refused_for_an_existing_study(tiny_study, sqlite_url, tmp_path):
    hpo.run(tiny_study, storage=sqlite_url, n_trials=1)
    edited = tmp_path / "edited.toml"
    edited.write_text(tiny_study.read_text().replace('["Adam", "SGD"]\nlearning_rate',
                                                     '["Adam", "Nadam"]\nlearning_rate'))
    with pytest.raises(StudyError, match="different grid .*use study_name"):
        hpo.run(edited, storage=sqlite_url, n_trials=1)


def test_nan_guard_fails_a_diverged_run():
    guard = NanGuard()
    guard.on_train_batch_end(0, {"loss": 0.5})
    with pytest.raises(NonFiniteLossError, match="loss became nan at epoch 1, batch 3"):
        guard.on_train_batch_end(2, {"loss": float("nan")})


def test_best_reads_a_stored_study(tiny_study, sqlite_url):
    hpo.run(tiny_study, storage=sqlite_url, figures=False)
    name = load_study_config(tiny_study).name
    best = hpo.best(name, storage=sqlite_url)
    assert best.value == optuna.load_study(study_name=name, storage=sqlite_url).best_value
    with pytest.raises(StudyError, match="no study 'missing'"):
        hpo.best("missing", storage=sqlite_url)


def test_a_bug_that_fails_every_trial_stops_the_worker_after_n_in_a_row(tiny_study, sqlite_url,
                                                                       monkeypatch):
    from typer.testing import CliRunner

    from hpo.cli import app
    from hpo.errors import TooManyFailures
    from hpo.trial import _objective as objective_module

    def broken(self, trial, recorder, params, dataset, started, **kwargs):
        return params.no_such_field  # a programming error, not a training failure

    monkeypatch.setattr(objective_module.Objective, "_train", broken)
    with pytest.raises(TooManyFailures, match="2 trials failed in a row"):
        hpo.run(tiny_study, storage=sqlite_url, max_consecutive_failures=2)
    study = optuna.load_study(study_name=hpo.load_study_config(tiny_study).name,
                              storage=sqlite_url)
    assert [t.state for t in study.trials] == [TrialState.FAIL] * 2
    assert study.trials[0].user_attrs["fail_reason"].startswith("AttributeError:")
    assert "no_such_field" in study.trials[0].user_attrs["fail_traceback"]
    # The CLI: one line, exit status 1; nothing left RUNNING; the points wait for a resume.
    result = CliRunner().invoke(app, ["run", "--study", str(tiny_study), "--storage",
                                      sqlite_url, "--quiet"])
    assert result.exit_code == 1, result.output
    assert "3 trials failed in a row (last: AttributeError" in result.output
    assert "Traceback" not in result.output
    study = optuna.load_study(study_name=study.study_name, storage=sqlite_url)
    assert not study.get_trials(states=(TrialState.RUNNING,))
    # A run whose every trial failed is no success either, however few it ran.
    result = CliRunner().invoke(app, ["run", "--study", str(tiny_study), "--storage",
                                      sqlite_url, "--quiet", "--n-trials", "1",
                                      "--retry-failed", "2"])
    assert result.exit_code == 1, result.output
    assert "1 trial failed in a row" in result.output
    monkeypatch.undo()
    assert hpo.run(tiny_study, storage=sqlite_url, retry_failed=3,
                   figures=False).best_trial is not None


def test_a_study_name_cannot_put_kept_models_outside_the_artifacts_folder(tiny_study, tmp_path):
    artifacts = tmp_path / "deep" / "artifacts"
    study = hpo.run(tiny_study, storage=f"sqlite:///{tmp_path / 's.db'}", n_trials=1,
                    study_name="../../../escaped", artifacts=artifacts, keep_models=1)
    assert study.study_name == "../../../escaped"
    kept = list(tmp_path.rglob("*.keras"))
    assert len(kept) == 1 and kept[0].is_relative_to(artifacts / "models")


def test_resuming_with_data_of_other_classes_is_refused(tiny_study, sqlite_url, tmp_path):
    from hpo.testing import make_image_folder

    hpo.run(tiny_study, storage=sqlite_url, n_trials=1)
    other = make_image_folder(tmp_path / "other", classes=("a", "b", "c"), per_class=8)
    with pytest.raises(StudyError, match=r"was created with data.classes = \[cats, dogs\], "
                                         r"but .* has data.classes = \[a, b, c\]: .*; point "
                                         r"data at"):
        hpo.run(tiny_study, storage=sqlite_url, data=other)
    study = optuna.load_study(study_name=load_study_config(tiny_study).name, storage=sqlite_url)
    assert len(study.trials) == 1  # nothing was trained on the other data
