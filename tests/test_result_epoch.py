"""One epoch per result: a trial's value, test metrics, figures and kept model come from the
same weights (issue 25, item 3), and intervals over repeats stay inside their bounds."""

from __future__ import annotations

import math
import sqlite3
import uuid

import numpy as np
import optuna
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hpo
from hpo.config import load_study_config
from hpo.errors import ConfigError, StudyError
from hpo.statistics import summarize
from hpo.testing import write_study
from tests.conftest import run_here


def _study(tmp_path, image_folder, *, policy: str | None, epochs: int = 3,
           metric: str = "val_loss", pruner: str = "none"):
    path = write_study(tmp_path / "epoch.toml", data=image_folder, epochs=epochs,
                       name=f"epoch-{uuid.uuid4().hex[:8]}", pruner=pruner)
    text = path.read_text().replace('metric = "val_accuracy"', f'metric = "{metric}"')
    head = f'result_epoch = "{policy}"\n' if policy is not None else ""
    path.write_text(head + text)
    return path


@pytest.fixture()
def wrecked_last_epoch(monkeypatch):
    """Every trial's last epoch starts from scrambled weights, so that its final epoch is
    far worse than its best (the trial's own training then runs as ever)."""
    from hpo.trial import _callbacks

    class Wrecker(_callbacks.NanGuard):
        def on_epoch_begin(self, epoch, logs=None):
            super().on_epoch_begin(epoch, logs)
            if epoch == self.params["epochs"] - 1:
                rng = np.random.default_rng(epoch)
                self.model.set_weights([rng.normal(0.0, 3.0, w.shape).astype(w.dtype)
                                        for w in self.model.get_weights()])

    monkeypatch.setattr(_callbacks, "NanGuard", Wrecker)


@pytest.mark.parametrize("policy", ["final", "best"])
def test_value_test_metrics_and_kept_model_come_from_one_epoch(
        policy, tmp_path, image_folder, sqlite_url, wrecked_last_epoch):
    import keras

    from hpo.data import load_dataset
    from hpo.trial import evaluate_classifier, model_path

    path = _study(tmp_path, image_folder, policy=policy)
    config = load_study_config(path)
    artifacts = tmp_path / "artifacts"
    study = hpo.run(path, storage=sqlite_url, n_trials=1, artifacts=artifacts, keep_models=1)
    trial = study.trials[0]
    attrs = trial.user_attrs
    losses = attrs["history"]["val_loss"]
    assert len(losses) == attrs["epochs_trained"] == 3
    assert min(losses) < losses[-1]  # the last epoch is worse: the two policies differ
    best = losses.index(min(losses)) + 1
    epoch = 3 if policy == "final" else best
    assert attrs["result_epoch"] == epoch and attrs["result_epoch_policy"] == policy
    assert attrs["best_epoch"] == best
    assert trial.value == losses[epoch - 1]

    model = keras.saving.load_model(model_path(artifacts, study, trial.number))
    data = load_dataset(config.data, config.architectures["small_cnn"].image_size,
                        seed=config.seed)
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    val_loss, _ = model.evaluate(data.validation.x, data.validation.y, verbose=0,
                                 batch_size=16)
    assert val_loss == pytest.approx(trial.value, rel=1e-4)  # the kept model's weights
    probabilities = np.asarray(model.predict(data.test.x, verbose=0), dtype=np.float64)
    evaluation = evaluate_classifier(probabilities, data.test.y)
    assert evaluation["confusion_matrix"] == attrs["confusion_matrix"]
    assert evaluation["test_accuracy"] == pytest.approx(attrs["test_accuracy"])
    assert evaluation["roc_auc"] == pytest.approx(attrs["roc_auc"], abs=1e-9)
    if policy == "best":  # what the user reads says which epoch the numbers are of
        shown = run_here("best", config.name, "--storage", sqlite_url, cwd=tmp_path)
        assert f"result_epoch: {best} (best epoch)" in shown.stdout, shown.stderr
        table = run_here("trials", config.name, "--storage", sqlite_url, cwd=tmp_path)
        assert f" {best}/3 best " in table.stdout, table.stderr


def test_the_policy_is_a_study_file_key_defaulting_to_final(tmp_path, image_folder):
    assert load_study_config(_study(tmp_path, image_folder, policy=None)).result_epoch == \
        "final"
    assert load_study_config(_study(tmp_path, image_folder, policy="best")).result_epoch == \
        "best"
    with pytest.raises(ConfigError, match="key 'result_epoch'.*expected one of final, best"):
        load_study_config(_study(tmp_path, image_folder, policy="last"))


def test_a_resumed_study_keeps_its_policy(tmp_path, image_folder, sqlite_url):
    path = _study(tmp_path, image_folder, policy="final", epochs=1)
    name = load_study_config(path).name
    hpo.run(path, storage=sqlite_url, n_trials=1)
    assert optuna.load_study(study_name=name, storage=sqlite_url).user_attrs[
        "hpo:result_epoch"] == "final"
    path.write_text(path.read_text().replace('result_epoch = "final"',
                                             'result_epoch = "best"'))
    result = run_here("run", "--study", str(path), "--storage", sqlite_url, "--n-trials", "1",
                      "--quiet", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "result_epoch = 'final'" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert len(optuna.load_study(study_name=name, storage=sqlite_url).trials) == 1


def test_a_study_stored_before_the_policy_was_recorded_resumes_as_best(
        tmp_path, image_folder, sqlite_url):
    path = _study(tmp_path, image_folder, policy=None, epochs=1)
    name = load_study_config(path).name
    hpo.run(path, storage=sqlite_url, n_trials=1)
    with sqlite3.connect(sqlite_url.removeprefix("sqlite:///")) as db:  # as an earlier
        db.execute("DELETE FROM study_user_attributes WHERE key IN "  # hpo, which recorded
                   "('hpo:result_epoch', 'hpo:identity')")  # neither
    assert "hpo:result_epoch" not in optuna.load_study(study_name=name,
                                                       storage=sqlite_url).user_attrs
    with pytest.raises(StudyError, match='result_epoch = "best"'):
        hpo.run(path, storage=sqlite_url, n_trials=1)
    path.write_text('result_epoch = "best"\n' + path.read_text())
    study = hpo.run(path, storage=sqlite_url, n_trials=1)
    assert study.user_attrs["hpo:result_epoch"] == "best"


@pytest.mark.parametrize("policy", ["final", "best"])
def test_a_pruned_trial_reports_and_keeps_its_result_epochs_metric(policy):
    import keras

    from hpo.trial._callbacks import ResultEpoch, pruning_callback

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    result = ResultEpoch("val_loss", maximize=False, policy=policy)
    result.set_model(model)
    study = optuna.create_study(pruner=optuna.pruners.NopPruner())
    trial = study.ask()
    reporter = pruning_callback(trial, result)
    for epoch, loss in enumerate([0.7, 0.5, 0.9]):
        result.on_epoch_end(epoch, {"val_loss": loss})
        reporter.on_epoch_end(epoch, {"val_loss": loss})
    expected = [0.7, 0.5, 0.9] if policy == "final" else [0.7, 0.5, 0.5]
    assert [v for _, v in sorted(study.trials[0].intermediate_values.items())] == expected
    assert result.best_epoch == 2 and result.epoch == (3 if policy == "final" else 2)
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    assert study.trials[0].value == result.value == expected[-1]


@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=30))
@settings(max_examples=200, deadline=None)
def test_intervals_stay_inside_the_values_bounds(values):
    summary = summarize(values)
    low, high = summary["ci95"]
    assert min(values) <= low <= high <= max(values)  # so inside [0, 1], as any bound
    assert low - 1e-12 <= summary["mean"] <= high + 1e-12
    assert summary["ci95_method"].startswith("bootstrap percentile")


def test_the_t_interval_that_passed_one_is_gone():
    from scipy import stats

    values = [1.0, 1.0, 0.8160]
    half = stats.t.ppf(0.975, 2) * np.std(values, ddof=1) / math.sqrt(3)
    assert np.mean(values) + half > 1.2  # the t-interval of these accuracies: [0.67, 1.20]
    low, high = summarize(values)["ci95"]
    assert 0.8160 <= low < high <= 1.0
