"""A study has one identity, and a grid and a search of one study file relate (issue 25, 1-2).

The grid and the search run in two linked Optuna studies (``S`` and ``S.search``, or ``S.grid``
when the search came first); the search takes the grid's finished trials as its history. A
study records what a trial's number means (its data, split, shaping and metric) and refuses
a run that would change it, as it refuses a study it did not create.
"""

from __future__ import annotations

import logging
import shutil
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

import hpo
from hpo.config import load_study_config
from hpo.search import make_sampler, suggest, to_space
from hpo.storage import open_storage
from hpo.study import attrs, open_study, study_identity
from hpo.testing import make_image_folder, write_study
from tests.conftest import run_here

#: Ten grid points, all inside the space and at its training defaults otherwise: as many as
#: TPE's random start-up trials, so that a search that took them starts from its model.
_TEN_RATES = "learning_rate = [0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001, 0.0005, 0.0002, 0.0001]"


def _ten_point_study(path: Path, data: Path, name: str) -> Path:
    write_study(path, data=data, name=name)
    text = path.read_text().replace('optimizer = ["Adam", "SGD"]\nlearning_rate = [0.01, 0.001]',
                                    _TEN_RATES)
    assert _TEN_RATES in text
    path.write_text(text)
    return path


def _snapshot(url: str) -> list[tuple]:
    """Every study of the storage with its user attributes and trials, to compare."""
    result = []
    for summary in optuna.get_all_study_summaries(url):
        study = optuna.load_study(study_name=summary.study_name, storage=url)
        result.append((summary.study_name, sorted(study.user_attrs.items(), key=str),
                       [(t.number, t.state, t.params, t.values) for t in study.trials]))
    return result


def _grid_then_search(tmp_path: Path, image_folder: Path, url: str) -> None:
    name = f"gs-{uuid.uuid4().hex[:8]}"
    try:
        _check_grid_then_search(tmp_path, image_folder, url, name)
    finally:  # a shared PostgreSQL database keeps no test's studies
        for study in (name, f"{name}.search"):
            try:
                optuna.delete_study(study_name=study, storage=url)
            except KeyError:
                pass


def _check_grid_then_search(tmp_path: Path, image_folder: Path, url: str, name: str) -> None:
    study_file = _ten_point_study(tmp_path / "ten.toml", image_folder, name)
    # in this process: one backend start; no figures (what this checks is in the database)
    hpo.run(study_file, sampler="grid", storage=url, figures=False)
    search = run_here("run", "--study", str(study_file), "--sampler", "tpe", "--n-trials", "1",
                      "--seed", "3", "--storage", url, "--no-figures", cwd=tmp_path)
    assert search.returncode == 0, search.stderr
    assert (f"history from grid study {name!r}: took 10 finished trial(s), left out none"
            in search.stderr)
    assert f"study {name}.search: sampler tpe" in search.stdout

    grid_study = optuna.load_study(study_name=name, storage=url)  # stock Optuna loads both
    linked = optuna.load_study(study_name=f"{name}.search", storage=url)
    assert grid_study.user_attrs[attrs.FAMILY] == "grid"
    assert grid_study.user_attrs[attrs.LINKS] == {"search": f"{name}.search"}
    assert linked.user_attrs[attrs.LINKS] == {"grid": name}
    for study in (grid_study, linked):
        assert not [t for t in study.trials if t.state == TrialState.FAIL]
    imported = [t for t in linked.trials if attrs.IMPORTED_FROM in t.user_attrs]
    ran = [t for t in linked.trials if attrs.IMPORTED_FROM not in t.user_attrs]
    assert len(imported) == 10 and len(ran) == 1  # --n-trials counts what the run trained
    assert sorted(t.user_attrs[attrs.IMPORTED_FROM]["trial"] for t in imported) == \
        list(range(10))
    assert {t.params["learning_rate"] for t in imported} == \
        {t.params["learning_rate"] for t in grid_study.trials}

    # A cold start of the same sampler with the same seed would have tried this first:
    config = load_study_config(study_file)
    cold = optuna.create_study(sampler=make_sampler("tpe", config, 3),
                               direction=config.direction)
    cold_first = suggest(cold.ask(), config, grid=False)
    assert ran[0].params != cold_first

    linked = hpo.run(study_file, sampler="random", n_trials=1, storage=url, figures=False)
    assert linked.study_name == f"{name}.search"
    assert len(linked.trials) == 12  # nothing taken twice, nothing trained again
    best = run_here("best", name, "--storage", url)
    trials = run_here("trials", f"{name}.search", "--storage", url)
    assert best.returncode == 0 and trials.returncode == 0, best.stderr + trials.stderr
    assert f"grid {name} #0" in trials.stdout and "ran here" in trials.stdout
    assert f"linked grid study {name!r}: 10 trials" in trials.stdout
    status = run_here("status", name, "--storage", url, "--artifacts", str(tmp_path / "a"))
    assert f"linked search study {name}.search: 12 trials (10 grid trial(s)" in status.stdout


@pytest.mark.slow  # ten grid trials: as many as TPE's random start-up
def test_a_search_after_the_grid_starts_from_the_grid_on_sqlite(tmp_path, image_folder):
    _grid_then_search(tmp_path, image_folder, f"sqlite:///{tmp_path / 's.db'}")


@pytest.mark.slow
def test_a_search_after_the_grid_starts_from_the_grid_on_postgresql(tmp_path, image_folder,
                                                                    postgres_url):
    _grid_then_search(tmp_path, image_folder, postgres_url)


def test_a_grid_after_a_search_goes_to_a_linked_grid_study(tmp_path, tiny_study):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    name = load_study_config(tiny_study).name
    hpo.run(tiny_study, sampler="random", n_trials=1, storage=url, figures=False)
    grid = hpo.run(tiny_study, sampler="grid", storage=url, figures=False)  # the same path
    assert grid.study_name == f"{name}.grid"
    assert len(grid.trials) == 4
    search = hpo.run(tiny_study, sampler="random", n_trials=1, storage=url, figures=False)
    assert search.study_name == name
    assert search.user_attrs[attrs.LINKS] == {"grid": f"{name}.grid"}
    imported = [t for t in search.trials if attrs.IMPORTED_FROM in t.user_attrs]
    # Adam's points are in the space; SGD's trained at Keras's momentum, which the space
    # searches: those two are left out
    assert sorted(t.params["optimizer"] for t in imported) == ["Adam", "Adam"]
    assert len(search.trials) == 4
    assert not [t for s in (grid, search) for t in s.trials if t.state == TrialState.FAIL]


def test_a_grid_trial_is_converted_only_when_the_space_holds_it(tmp_path, image_folder):
    config = load_study_config(write_study(tmp_path / "t.toml", data=image_folder))
    training = dict(config.training)
    params, distributions = to_space(config, {"optimizer": "Adam", "learning_rate": 0.01},
                                     training)
    assert params == {"optimizer": "Adam", "learning_rate": 0.01}
    assert isinstance(distributions["learning_rate"], optuna.distributions.FloatDistribution)
    assert to_space(config, {"optimizer": "Adam", "learning_rate": 0.5}, training) == \
        "learning_rate outside the space"
    assert "momentum" in to_space(config, {"optimizer": "SGD", "learning_rate": 0.01},
                                  training)
    assert "epochs" in to_space(config, {"optimizer": "Adam", "learning_rate": 0.01},
                                {**training, "epochs": 5})


def test_a_changed_identity_is_refused_naming_the_key(tmp_path, image_folder):
    url = f"sqlite:///{tmp_path / 'i.db'}"
    name = f"id-{uuid.uuid4().hex[:8]}"
    study_file = write_study(tmp_path / "id.toml", data=image_folder, name=name)
    first = run_here("run", "--study", str(study_file), "--n-trials", "1", "--storage", url,
                     "--quiet", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    stored = optuna.load_study(study_name=name, storage=url).user_attrs[attrs.IDENTITY]
    assert stored["seed"] == 0 and stored["data.channels"] == 3
    assert stored["metric"] == "val_accuracy" and stored["data.classes"] == ["cats", "dogs"]
    before = _snapshot(url)
    original = study_file.read_text()
    other = make_image_folder(tmp_path / "other", per_class=12)  # same classes, other images
    for key, edit, extra in (
            ("seed", ("seed = 0", "seed = 1"), ()),
            ("data.channels", ("channels = 3", "channels = 1"), ()),
            ("metric", ('metric = "val_accuracy"', 'metric = "val_loss"'), ()),
            ("image_size.small_cnn", ("image_size = [16, 16]", "image_size = [20, 20]"), ()),
            ("data.images", ("", ""), ("--data", str(other))),
    ):
        study_file.write_text(original.replace(*edit))
        # the search's linked study is refused too (checked once for each key but the seed)
        for sampler in ("grid", "tpe") if key == "seed" else ("grid",):
            refused = run_here("run", "--study", str(study_file), "--sampler", sampler,
                               "--storage", url, *extra, cwd=tmp_path)
            assert refused.returncode == 2, (key, refused.stderr)
            assert f"study {name!r} was created with {key} = " in refused.stderr, refused.stderr
            assert "--study-name" in refused.stderr and "Traceback" not in refused.stderr
        assert _snapshot(url) == before, key
    study_file.write_text(original)
    moved = tmp_path / "elsewhere"
    shutil.copytree(image_folder, moved)
    # the same images elsewhere, and another sampler and weight seed: the same study
    resumed = run_here("run", "--study", str(study_file), "--n-trials", "1", "--seed", "7",
                       "--data", str(moved), "--storage", url, "--quiet", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert len(optuna.load_study(study_name=name, storage=url).trials) == 2


def test_a_stock_optuna_study_of_the_same_name_is_not_adopted(tmp_path, tiny_study):
    url = f"sqlite:///{tmp_path / 'o.db'}"
    name = load_study_config(tiny_study).name
    stock = optuna.create_study(study_name=name, storage=url, direction="maximize")
    stock.add_trial(optuna.trial.create_trial(
        value=0.9, params={"x": 1.0},
        distributions={"x": optuna.distributions.FloatDistribution(0, 2)}))
    before = _snapshot(url)
    for sampler in ("grid", "tpe"):
        refused = run_here("run", "--study", str(tiny_study), "--sampler", sampler,
                           "--storage", url, cwd=tmp_path)
        assert refused.returncode == 2, refused.stderr
        assert f"study {name!r} in this storage was not created by hpo" in refused.stderr
        assert "--study-name" in refused.stderr
    assert _snapshot(url) == before


def test_an_empty_stock_study_is_adopted_and_an_old_hpo_study_gets_an_identity(
        tmp_path, tiny_study, caplog):
    config = load_study_config(tiny_study)
    storage = open_storage(f"sqlite:///{tmp_path / 'a.db'}")
    optuna.create_study(study_name=config.name, storage=storage, direction="maximize")
    adopted = open_study(config, storage, sampler="grid")
    assert adopted.user_attrs[attrs.IDENTITY] == study_identity(config)
    assert adopted.user_attrs[attrs.FAMILY] == "grid"

    old = optuna.create_study(study_name="old", storage=storage, direction="maximize")
    old.set_user_attr("hpo:space_hash:grid", adopted.user_attrs["hpo:space_hash:grid"])
    old.set_user_attr(attrs.DATA, {"source": "x", "classes": ["cats", "dogs"]})
    with caplog.at_level(logging.INFO, logger="hpo.study"):
        resumed = open_study(config, storage, sampler="grid", study_name="old")
    assert "created by an earlier hpo without a recorded identity" in caplog.text
    assert resumed.user_attrs[attrs.IDENTITY] == study_identity(config)

    other = optuna.create_study(study_name="old2", storage=storage, direction="maximize")
    other.set_user_attr(attrs.DATA, {"source": "x", "classes": ["ants", "bees"]})
    identity = {**study_identity(config), "data.classes": ["cats", "dogs"]}
    with pytest.raises(hpo.StudyError, match="data.classes"):
        open_study(config, storage, sampler="grid", study_name="old2", identity=identity)


@pytest.mark.parametrize("url", ["sqlite", None])
def test_kept_models_rank_the_search_s_own_trials_and_export_finds_a_grid_one(
        tmp_path, url):
    from hpo.trial import Artifacts, export_model, model_path

    from hpo.storage import storage_of

    storage = f"sqlite:///{tmp_path / 'k.db'}" if url else None
    study = optuna.create_study(study_name="s.search", storage=storage, direction="maximize")
    dist = {"x": optuna.distributions.FloatDistribution(0, 1)}
    grid = optuna.create_study(study_name="s", storage=storage_of(study), direction="maximize")
    for value in (0.1, 0.2, 0.3, 0.4, 0.9):  # grid trial 4 is the one the search took
        grid.add_trial(optuna.trial.create_trial(value=value, params={"x": value},
                                                 distributions=dist))
    for number, (value, taken) in enumerate([(0.9, {"study": "s", "trial": 4}), (0.5, None),
                                             (0.7, None)]):
        study.add_trial(optuna.trial.create_trial(
            value=value, params={"x": value}, distributions=dist,
            user_attrs={attrs.IMPORTED_FROM: taken} if taken else {}))
    artifacts = Artifacts(directory=tmp_path / "a", keep_models=1)
    assert artifacts._top(study) == [(2, 0.7)]  # the grid's 0.9 has its model elsewhere
    kept = model_path(artifacts.directory, grid, 4)
    kept.parent.mkdir(parents=True)
    kept.write_bytes(b"model")
    assert export_model(study, artifacts.directory, tmp_path / "best.keras") == \
        (0, tmp_path / "best.keras")
    assert (tmp_path / "best.keras").read_bytes() == b"model"


def _first_draws(study: optuna.Study, n: int = 3) -> list[float]:
    dist = optuna.distributions.FloatDistribution(0.0, 1.0)
    return [study.sampler.sample_independent(study, optuna.trial.create_trial(
        state=TrialState.RUNNING, params={}, distributions={}), "x", dist) for _ in range(n)]


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_every_process_that_opens_a_search_draws_its_own_sampler_stream(tmp_path, tiny_study,
                                                                        sampler):
    """Workers, recycled processes and resumes each drew the seed's one sequence again
    (the same configurations trained several times); the first process keeps the seed as
    given, so a study run once by one process is reproduced by its seed."""
    config = load_study_config(tiny_study)
    storage = open_storage(f"sqlite:///{tmp_path / 'streams.db'}")
    opened = [open_study(config, storage, sampler=sampler, seed=7) for _ in range(3)]
    draws = [_first_draws(study) for study in opened]
    assert len({tuple(d) for d in draws}) == 3, draws  # three processes, three streams
    alone = open_study(config, open_storage(f"sqlite:///{tmp_path / 'alone.db'}"),
                       sampler=sampler, seed=7)
    assert _first_draws(alone) == draws[0]  # the first process: the seed as given


@pytest.mark.parametrize("change", ["repeats", "result_epoch"])
def test_a_search_never_takes_a_grid_whose_values_mean_something_else(tmp_path, tiny_study,
                                                                     change):
    """The grid's one-run, final-epoch values are not the search's means or best epochs:
    the pair shares one identity, refused naming the key (a resume of either as well)."""
    from dataclasses import replace

    from hpo.errors import StudyError

    config = load_study_config(tiny_study)
    storage = open_storage(f"sqlite:///{tmp_path / 'pair.db'}")
    open_study(config, storage, sampler="grid")
    other = config.with_repeats(2) if change == "repeats" else \
        replace(config, result_epoch="best")
    with pytest.raises(StudyError, match=change):
        open_study(other, storage, sampler="tpe")
    assert [s.study_name for s in storage.get_all_studies()] == [config.name]


def test_other_pictures_under_the_same_file_names_are_other_data(tmp_path):
    """--data at another folder whose files are named as the study's (0001.png, ...) but
    hold other pictures: data.images differs (it hashes the decoded pixels too)."""
    from hpo.config import DataConfig
    from hpo.data import load_dataset

    ours = make_image_folder(tmp_path / "ours", per_class=6, seed=0)
    theirs = make_image_folder(tmp_path / "theirs", per_class=6, seed=5)
    copy = tmp_path / "copy"
    shutil.copytree(ours, copy)
    hashes = [load_dataset(DataConfig(source=str(folder)), (16, 16),
                           cache_dir=tmp_path / "cache").split_hash
              for folder in (ours, copy, theirs)]
    assert hashes[0] == hashes[1]  # a copy elsewhere: the same data
    assert hashes[0] != hashes[2]  # other pictures under the same names
