"""Run settings by concern: four frozen sections, every rule between settings a validator of
its section, one translator of a ValidationError, the names derived from the models, and
hpo.run honouring or refusing each setting it accepts."""

from __future__ import annotations

import pydantic
import pytest

import hpo
from hpo.config import (
    SECTIONS,
    SETTING_NAMES,
    RunSettings,
    flag,
    settings_from_env,
)
from hpo.errors import SETTINGS, InvalidSetting


def test_every_setting_belongs_to_exactly_one_section_and_messages_may_name_it():
    fields = [(section, name) for section, model in SECTIONS.items()
              for name in model.model_fields]
    assert len(SETTING_NAMES) == len(fields)  # no name in two sections
    assert set(SETTING_NAMES) <= SETTINGS
    assert SETTING_NAMES["storage"] == ("storage", "url")
    assert SETTING_NAMES["n_trials"] == ("search", "n_trials")
    assert SETTING_NAMES["seed"] == ("trial", "seed")
    assert SETTING_NAMES["workers"] == ("process", "workers")


def test_settings_are_built_by_name_into_frozen_sections_and_travel_whole():
    settings = RunSettings.create(study="demo", n_trials=3, storage="sqlite:///x.db",
                                  heartbeat=5, seed=7, workers=2, timeout=4)
    assert settings.search.n_trials == 3 and settings.search.timeout == 4.0
    assert settings.storage.url == "sqlite:///x.db" and settings.storage.grace_period == 15
    assert settings.trial.seed == 7 and settings.process.workers == 2
    with pytest.raises(pydantic.ValidationError):
        settings.search.n_trials = 4  # type: ignore[misc]
    assert settings_from_env(settings.to_env()) == settings
    changed = settings.replace(n_trials=1, workers=1)
    assert (changed.search.n_trials, changed.process.workers) == (1, 1)
    assert changed.storage == settings.storage
    assert "sqlite:///x.db" not in repr(settings)  # a URL may hold a password


@pytest.mark.parametrize(("values", "line"), [
    ({"grace": 5, "heartbeat": 5},
     "--grace 5 s would fail live trials: received 5 s with --heartbeat 5 s, expected at "
     "least 10 s"),
    ({"trials_per_gpu": 2, "workers": 2},
     "--trials-per-gpu 2 applies to workers on GPUs, received with --workers 2 CPU workers "
     "and no --gpus"),
    ({"n_trials": 0}, "--n-trials must be at least 1, received 0"),
    ({"storage": 3}, "--storage must be str, received 3"),
    ({"n_trails": 3}, "--n-trails is an unknown setting; expected one of study, sampler"),
])
def test_a_broken_setting_or_rule_is_one_line_naming_the_setting(values, line):
    with pytest.raises(InvalidSetting) as caught:
        RunSettings.create(study="demo", **values)
    assert line in caught.value.render(flag)
    assert "$" not in caught.value.render(flag)


@pytest.mark.parametrize(("values", "setting"), [
    ({"workers": 2}, "workers"), ({"gpus": "0"}, "gpus"), ({"isolate": True}, "isolate"),
    ({"recycle_after": 5}, "recycle_after"), ({"trials_per_gpu": 2, "gpus": "0"}, "gpus"),
])
def test_hpo_run_refuses_a_setting_that_needs_other_processes(tmp_path, monkeypatch, values,
                                                               setting):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InvalidSetting) as caught:
        hpo.run("demo", storage=f"sqlite:///{tmp_path / 'r.db'}", **values)
    assert caught.value.setting == setting
    assert "hpo.run (one worker in this process) does not do" in str(caught.value)
    assert list(tmp_path.iterdir()) == []  # refused before anything was stored


def test_hpo_run_refuses_settings_that_are_not_run_settings_with_one_line(tmp_path,
                                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InvalidSetting) as caught:
        hpo.run("demo", {"n_trials": 1})  # type: ignore[arg-type]
    assert str(caught.value).startswith("settings must be a hpo.config.RunSettings")
    assert list(tmp_path.iterdir()) == []
