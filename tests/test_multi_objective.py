"""Multi-objective search: validation metric with training time or model size, Pareto front."""

from __future__ import annotations

import json

import optuna
import pytest
from optuna.trial import TrialState

import hpo
from hpo.config import load_study_config
from hpo.errors import ConfigError, StudyError
from hpo.testing import write_study
from tests.conftest import run_here


def _dominated(a: list[float], b: list[float], directions: list[str]) -> bool:
    """Whether ``b`` dominates ``a``: at least as good everywhere, better somewhere."""
    better = [(y > x) if d == "maximize" else (y < x) for x, y, d in zip(a, b, directions)]
    equal = [x == y for x, y in zip(a, b)]
    return all(e or bt for e, bt in zip(equal, better)) and any(better)


def test_a_multi_objective_study_has_a_pareto_front_stock_optuna_reads(
        tmp_path, image_folder, sqlite_url):
    study_file = write_study(tmp_path / "s.toml", data=image_folder, name="mo")
    hpo.run(study_file, storage=sqlite_url, objectives="val_accuracy,train_time,n_params")
    study = optuna.load_study(study_name="mo", storage=sqlite_url)  # stock Optuna
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE", "MINIMIZE"]
    names = ["val_accuracy", "train_time", "n_params"]
    assert study.metric_names == names
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 4
    for trial in complete:
        assert trial.values[0] == max(trial.user_attrs["history"]["val_accuracy"])
        assert trial.values[1] == pytest.approx(trial.user_attrs["train_time_s"], abs=1e-3)
        assert trial.values[2] == trial.user_attrs["n_params"]
    front = study.best_trials
    assert front
    directions = ["maximize", "minimize", "minimize"]
    for trial in complete:  # the front is exactly the non-dominated trials
        dominated = any(_dominated(trial.values, other.values, directions)
                        for other in complete)
        assert (trial.number in {t.number for t in front}) == (not dominated)
    result = run_here("best", "mo", "--storage", sqlite_url, "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["objectives"] == names
    assert sorted(t["number"] for t in shown["pareto_front"]) == \
        sorted(t.number for t in front)
    text = run_here("best", "mo", "--storage", sqlite_url, cwd=tmp_path).stdout
    assert text.startswith(f"Pareto front of {', '.join(names)}: {len(front)} trial(s)")
    table = run_here("trials", "mo", "--storage", sqlite_url, cwd=tmp_path).stdout
    assert table.splitlines()[0].split()[:5] == ["#", "state", *names]


def test_objectives_in_a_study_file_and_their_mistakes(tmp_path, image_folder):
    path = write_study(tmp_path / "s.toml", data=image_folder)
    text = path.read_text().replace('metric = "val_accuracy"\n', "")
    path.write_text('objectives = ["val_loss", "n_params"]\n' + text)
    config = load_study_config(path)
    assert config.objective_names == ("val_loss", "n_params")
    assert config.metric == "val_loss" and config.directions == ("minimize", "minimize")
    for bad, expected in ((['"train_time"'], "first objective must be the validation metric"),
                          (['"val_accuracy"', '"speed"'], "unknown objective 'speed'"),
                          (['"val_accuracy"', '"val_accuracy"'], "named twice")):
        path.write_text(f"objectives = [{', '.join(bad)}]\n" + text)
        with pytest.raises(ConfigError, match=expected):
            load_study_config(path)
    path.write_text('objectives = ["val_accuracy", "train_time"]\n' +
                    text.replace('pruner = "none"', 'pruner = "median"'))
    with pytest.raises(ConfigError, match="cannot prune a multi-objective trial"):
        load_study_config(path)
    path.write_text('metric = "val_accuracy"\nobjectives = ["val_loss", "n_params"]\n' + text)
    with pytest.raises(ConfigError, match="must be the metric 'val_accuracy'"):
        load_study_config(path)


def test_a_single_objective_study_is_not_resumed_as_a_multi_objective_one(
        tmp_path, image_folder, sqlite_url):
    study_file = write_study(tmp_path / "s.toml", data=image_folder, name="one")
    hpo.run(study_file, storage=sqlite_url, n_trials=1, figures=False)
    with pytest.raises(StudyError, match="was created with objectives = \\[val_accuracy\\], "
                                         "but .* has objectives = \\[val_accuracy, "
                                         "train_time\\]: .*use study_name"):
        hpo.run(study_file, storage=sqlite_url, objectives="val_accuracy,train_time")
    with pytest.raises(ConfigError, match="optimises one objective"):
        hpo.run(study_file, storage=sqlite_url, sampler="cmaes", study_name="other",
                objectives="val_accuracy,n_params")
    assert len(optuna.load_study(study_name="one", storage=sqlite_url).trials) == 1
