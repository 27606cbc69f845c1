from __future__ import annotations

import optuna
import pytest

from hpo.config import load_study_config
from hpo.search import describe_space, grid_search_space, resolve, space_hash, suggest


def test_grid_suggestions_cover_the_grid_exactly_once():
    config = load_study_config("demo")
    study = optuna.create_study(sampler=optuna.samplers.GridSampler(grid_search_space(config)))
    seen = []

    def objective(trial):
        seen.append(tuple(suggest(trial, config, grid=True).values()))
        return 0.5

    study.optimize(objective, n_trials=100)  # GridSampler stops the study when exhausted
    assert len(seen) == len(set(seen)) == config.grid_size == 12


def test_conditional_parameters_follow_their_condition():
    config = load_study_config("firearms")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    saw_momentum = False
    for _ in range(60):
        trial = study.ask()
        params = suggest(trial, config, grid=False)
        if "momentum" in params:
            saw_momentum = True
            assert params["optimizer"] in ("SGD", "RMSprop")
        if "beta_1" in params:
            assert params["optimizer"] in ("Adam", "Adamax", "Nadam")
        if "trainable_fraction" in params:
            assert params["architecture"] == "inception_v3"
        assert 1e-5 <= params["learning_rate"] <= 1e-1
        resolved = resolve(config, params)
        assert set(resolved.optimizer_kwargs) <= {"momentum", "nesterov", "epsilon",
                                                   "beta_1", "rho"}
        study.tell(trial, 0.5)
    assert saw_momentum


def test_resolve_merges_defaults_and_architecture_settings():
    config = load_study_config("demo")
    params = resolve(config, {"optimizer": "SGD", "learning_rate": 0.01, "batch_size": 64})
    assert params.architecture == "small_cnn"
    assert params.epochs == 3
    assert params.model_kwargs == {"dense_units": 64}
    assert params.optimizer_kwargs == {}


def test_space_hash_changes_when_the_grid_changes(tmp_path):
    config = load_study_config("demo")
    text = config.path.read_text().replace('["Adam", "SGD", "RMSprop"]', '["Adam", "SGD"]')
    edited = tmp_path / "demo.toml"
    edited.write_text(text)
    other = load_study_config(edited)
    assert space_hash(config, grid=True) != space_hash(other, grid=True)
    assert space_hash(config, grid=True) == space_hash(load_study_config("demo"), grid=True)


@pytest.mark.parametrize("grid", [True, False])
def test_describe_space_is_json_ready(grid):
    import json

    description = describe_space(load_study_config("firearms"), grid=grid)
    json.dumps(description)
    if grid:
        assert description["size"] == 384


def test_the_gp_sampler_is_optunas_or_one_line_on_what_to_install():
    import importlib.util

    from hpo.errors import ConfigError
    from hpo.search import make_sampler

    config = load_study_config("demo")
    if importlib.util.find_spec("torch") and importlib.util.find_spec("scipy"):
        sampler = make_sampler("gp", config, seed=0)
        assert isinstance(sampler, optuna.samplers.GPSampler)
        study = optuna.create_study(sampler=sampler, direction="maximize")
        for _ in range(3):
            trial = study.ask()
            study.tell(trial, float(len(str(suggest(trial, config, grid=False)))))
        assert len(study.trials) == 3
    else:  # hpo does not install PyTorch by default
        with pytest.raises(ConfigError, match=r"sampler gp needs .*pip install 'hpo\[gp\]'"):
            make_sampler("gp", config, seed=0)
