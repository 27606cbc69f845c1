"""Repeated runs with statistics, baselines first, and comparisons (beyond the thesis)."""

from __future__ import annotations

import json

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState
from scipy import stats

import hpo
from hpo.config import load_study_config
from hpo.search import default_configurations
from tests.conftest import run_here


def test_repeats_train_each_configuration_r_times_with_recorded_seeds(tiny_study,
                                                                      sqlite_url, tmp_path):
    study = hpo.run(tiny_study, storage=sqlite_url, repeats=3, n_trials=2)
    for trial in study.trials:
        attrs = trial.user_attrs
        values = np.asarray(attrs["repeat_values"])
        assert len(values) == 3
        assert attrs["repeat_seeds"] == [0, 1, 2]
        assert trial.value == attrs["value_mean"] == pytest.approx(np.mean(values), abs=1e-12)
        assert attrs["value_std"] == pytest.approx(np.std(values, ddof=1), abs=1e-12)
        low, high = attrs["value_ci95"]  # bootstrap percentile: within the values seen
        assert values.min() <= low <= attrs["value_mean"] <= high <= values.max()
        assert attrs["value_ci95_method"].startswith("bootstrap percentile")
        assert len(attrs["repeat_result_epochs"]) == 3
        assert attrs["result_epoch"] == attrs["repeat_result_epochs"][0]  # the first run's
        assert attrs["test_accuracy"] == pytest.approx(
            np.mean(attrs["repeat_test_accuracies"]), abs=1e-12)
    name = load_study_config(tiny_study).name
    best = run_here("best", name, "--storage", sqlite_url, cwd=tmp_path)
    assert "over 3 runs: mean" in best.stdout and "95% CI" in best.stdout
    assert "bootstrap percentile" in best.stdout and "+-" not in best.stdout
    compared = run_here("compare", name, "0", "1", "--storage", sqlite_url, "--json",
                        cwd=tmp_path)
    assert compared.returncode == 0, compared.stderr
    result = json.loads(compared.stdout)
    a, b = study.trials[0].user_attrs["repeat_values"], study.trials[1].user_attrs[
        "repeat_values"]
    expected = stats.ttest_ind(a, b, equal_var=False)
    if np.isnan(expected.pvalue):
        assert np.isnan(result["p"])
    else:
        assert result["p"] == pytest.approx(expected.pvalue)


def test_an_edited_repeat_count_is_a_different_study(tiny_study, sqlite_url):
    hpo.run(tiny_study, storage=sqlite_url, n_trials=1, figures=False)
    from hpo.errors import StudyError

    with pytest.raises(StudyError, match="repeats = 1"):  # the identity's key, named
        hpo.run(tiny_study, storage=sqlite_url, n_trials=1, repeats=2)


def test_enqueued_defaults_are_the_first_trials(tiny_study, sqlite_url, tmp_path):
    name = load_study_config(tiny_study).name
    result = run_here("run", "--study", str(tiny_study), "--sampler", "tpe", "--n-trials", "3",
                      "--enqueue-defaults", "--storage", sqlite_url, "--quiet", "--no-figures",
                      cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    trials = optuna.load_study(study_name=name, storage=sqlite_url).trials
    firsts = [(t.params["optimizer"], t.params["learning_rate"]) for t in trials[:2]]
    assert firsts == [("Adam", 0.001), ("SGD", 0.01)]
    assert {t.state for t in trials} == {TrialState.COMPLETE}


def test_grid_defaults_first(tiny_study, sqlite_url, tmp_path):
    name = load_study_config(tiny_study).name
    result = run_here("run", "--study", str(tiny_study), "--n-trials", "2",
                      "--enqueue-defaults", "--storage", sqlite_url, "--quiet", "--no-figures",
                      cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    trials = optuna.load_study(study_name=name, storage=sqlite_url).trials
    assert {(t.params["optimizer"], t.params["learning_rate"]) for t in trials} == \
        {("Adam", 0.001), ("SGD", 0.01)}
    assert default_configurations(load_study_config("firearms"), grid=True)[0] == \
        {"optimizer": "Adadelta", "learning_rate": 0.001, "batch_size": 32}


def test_the_report_shows_mean_std_and_ci_of_repeated_configurations(tiny_study, sqlite_url,
                                                                    tmp_path):
    hpo.run(tiny_study, storage=sqlite_url, repeats=2, n_trials=2, figures=False)
    name = load_study_config(tiny_study).name
    result = run_here("report", name, "--storage", sqlite_url, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "val mean (std) [95% bootstrap CI]" in result.stdout
    assert "(2 runs)" in result.stdout
