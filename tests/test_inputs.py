"""Every input checked at the boundary, by type and range (issue 26, item 6): study-file
values, run settings' paths, the dashboard's port, export and report outputs. Each is
refused in one line before any trial; the storage URL's checks are in test_storage_url.py.
"""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest
from typer.testing import CliRunner

from hpo.cli import app
from hpo.config import RunSettings, load_study_config
from hpo.errors import ConfigError, InvalidSetting, OutputError
from tests.conftest import run_here

BASE = """
{top}
[data]
source = "bundled:digits"
{data}
[training]
architecture = "small_cnn"
{training}
[grid]
epochs = [1]
{grid}
{rest}
"""


def _study(tmp_path: Path, *, top: str = "", data: str = "", training: str = "",
           grid: str = "", rest: str = "") -> Path:
    path = tmp_path / "s.toml"
    path.write_text(BASE.format(top=top, data=data, training=training, grid=grid, rest=rest))
    return path


# -- the study file: every value with its type and range -------------------------------------

REFUSED = [
    # probabilities and fractions
    ({"training": "dropout = 1.0"}, "training.dropout", "from 0 to 1, 1 excluded"),
    ({"training": "dropout = -0.1"}, "training.dropout", "from 0 to 1"),
    ({"training": "dropout = nan"}, "training.dropout", "finite"),
    ({"grid": "momentum = [0.5, 1.0]\n", "rest": ""}, "grid.momentum", "1 excluded"),
    ({"training": "beta_1 = 1"}, "training.beta_1", "1 excluded"),
    ({"training": "beta_2 = -0.5"}, "training.beta_2", "1 excluded"),
    ({"training": "trainable_fraction = 1.5"}, "training.trainable_fraction", "from 0 to 1"),
    ({"data": "split = [0.5, 0.5, 0.5]"}, "data.split", "summing to 1"),
    ({"data": "split = [inf, 0.5, 0.5]"}, "data.split", "summing to 1"),
    # positive numbers
    ({"training": "learning_rate = 0"}, "training.learning_rate", "> 0"),
    ({"training": "learning_rate = inf"}, "training.learning_rate", "finite"),
    ({"training": "epsilon = 0.0"}, "training.epsilon", "> 0"),
    ({"training": "learning_rate_power = 0.5"}, "training.learning_rate_power", "<= 0"),
    ({"training": "initial_accumulator_value = -1.0"}, "training.initial_accumulator_value",
     ">= 0"),
    # integers
    ({"training": "batch_size = 0"}, "training.batch_size", "integer >= 1"),
    ({"training": "epochs = 2.5"}, "training.epochs", "integer >= 1"),
    ({"training": "filters = true"}, "training.filters", "integer >= 1"),
    ({"top": "seed = -1"}, "seed", ">= 0"),
    ({"top": "seed = 4294967296"}, "seed", "4294967295"),
    ({"top": "repeats = 0"}, "repeats", ">= 1"),
    # strings
    ({"training": 'hidden_layers = "50-0"'}, "training.hidden_layers", "positive widths"),
    ({"training": 'nesterov = "yes"'}, "training.nesterov", "true or false"),
    # choices
    ({"rest": "[space.batch_size]\nchoices = []"}, "space.batch_size.choices", "non-empty"),
    ({"rest": "[space.batch_size]\nchoices = [8, 8]"}, "space.batch_size.choices", "duplicate"),
    ({"grid": 'optimizer = ["Adam", "adam"]'}, "grid.optimizer", "duplicate"),
    # ranges: bounds, steps, integer parameters, log
    ({"rest": "[space.dropout]\nlow = 0.5\nhigh = 0.5"}, "space.dropout", "low < high"),
    ({"rest": "[space.dropout]\nlow = 0.0\nhigh = 1.0"}, "space.dropout.high", "1 excluded"),
    ({"rest": "[space.learning_rate]\nlow = 0.0\nhigh = 0.1\nlog = true"},
     "space.learning_rate.low", "> 0"),
    ({"rest": "[space.batch_size]\nlow = 8.0\nhigh = 64.0"}, "space.batch_size.low",
     "integer"),
    ({"rest": "[space.batch_size]\nlow = 8\nhigh = 64\nstep = 0.5"},
     "space.batch_size.step", "integer step"),
    ({"rest": "[space.batch_size]\nlow = 8\nhigh = 64\nstep = 10"},
     "space.batch_size.step", "set high = 58"),
    ({"rest": "[space.dropout]\nlow = 0.1\nhigh = 0.2\nstep = 0.5"},
     "space.dropout.step", "larger than high - low"),
    ({"rest": "[space.nesterov]\nlow = 0\nhigh = 1"}, "space.nesterov", "choices"),
    ({"rest": "[space.hidden_layers]\nlow = 1\nhigh = 9"}, "space.hidden_layers", "choices"),
    # what a given architecture builds with
    ({"rest": "[architectures.inception_v3]\nimage_size = [74, 74]"},
     "architectures.inception_v3.image_size", "at least 75x75"),
    ({"rest": "[architectures.alexnet]\nimage_size = [66, 67]"},
     "architectures.alexnet.image_size", "at least 67x67"),
    ({"grid": 'architecture = ["alexnet"]\ndense_units = [0, 64]',
      "rest": "[architectures.alexnet]\nimage_size = [67, 67]"},
     "grid.dense_units", "alexnet needs dense_units >= 1"),
    ({"training": "conv_blocks = 4", "rest": "[architectures.small_cnn]\nimage_size = [8, 8]"},
     "training.conv_blocks", "at most 3 blocks"),
    ({"rest": "[architectures.small_cnn]\ndropout = 1.0"}, "architectures.small_cnn.dropout",
     "1 excluded"),
    ({"data": "channels = 1", "grid": 'architecture = ["vgg16"]'}, "data.channels",
     "3-channel"),
]


@pytest.mark.parametrize("parts,key,words", REFUSED,
                         ids=[f"{r[1]}:{i}" for i, r in enumerate(REFUSED)])
def test_a_value_out_of_range_is_refused_in_one_line_naming_its_key(tmp_path, parts, key,
                                                                    words):
    path = _study(tmp_path, **parts)
    with pytest.raises(ConfigError) as caught:
        load_study_config(path)
    message = str(caught.value)
    assert "\n" not in message
    assert f"key '{key}'" in message and words in message, message


def test_values_at_the_edges_of_their_ranges_load_and_build(tmp_path):
    """The twins of the refusals: what a range includes loads, and the trial's first steps
    take it (Keras's SGD takes only a float momentum: momentum = 0 is written as an
    integer)."""
    from hpo.optimizers import build_optimizer
    from hpo.search import resolve, suggest

    path = _study(tmp_path, training="dropout = 0\ntrainable_fraction = 1",
                  grid='optimizer = ["SGD"]\nmomentum = [0, 0.99]',
                  rest="[space.batch_size]\nlow = 8\nhigh = 64\nstep = 8\n"
                       "[space.dropout]\nlow = 0\nhigh = 0.5\n"
                       "[architectures.small_cnn]\nimage_size = [8, 8]\nconv_blocks = 3")
    config = load_study_config(path)
    space = {s.name: s for s in config.space}
    assert space["batch_size"].integer and not space["dropout"].integer
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    sampled = suggest(study.ask(), config, grid=False)
    assert isinstance(sampled["dropout"], float) and sampled["batch_size"] % 8 == 0
    for momentum in (0, 0.99):
        params = resolve(config, {"optimizer": "SGD", "momentum": momentum})
        optimizer = build_optimizer(params.optimizer, params.learning_rate,
                                    **params.optimizer_kwargs)
        assert math.isclose(optimizer.momentum, momentum)


# -- run settings: paths are the right kind of thing -------------------------------------------

@pytest.mark.parametrize("setting,make,words", [
    ("artifacts", lambda d: _file(d / "f"), "it is a file"),
    ("artifacts", lambda d: _file(d / "f") / "sub", "above it is a file"),
    ("cache_dir", lambda d: _file(d / "f"), "it is a file"),
    ("data", lambda d: _file(d / "f"), "it is a file"),
    ("data", lambda d: d / "missing", "it does not exist"),
])
def test_a_path_setting_naming_the_wrong_thing_is_refused(tmp_path, setting, make, words):
    with pytest.raises(InvalidSetting) as caught:
        RunSettings.create(study="demo", **{setting: make(tmp_path)})
    assert caught.value.setting == setting and words in caught.value.problem


def test_path_settings_that_can_be_made_are_accepted(tmp_path):
    (tmp_path / "images").mkdir()
    settings = RunSettings.create(study="demo", artifacts=tmp_path / "new" / "art",
                                  cache_dir=str(tmp_path / "cache"), data=tmp_path / "images")
    assert settings.trial.artifacts == tmp_path / "new" / "art"
    assert RunSettings.create(study="demo", data="bundled:digits").search.data is not None


def test_the_default_cache_folder_naming_a_file_is_refused_before_any_trial(tmp_path,
                                                                           monkeypatch):
    import hpo

    monkeypatch.setenv("HPO_CACHE_DIR", str(_file(tmp_path / "cache")))
    with pytest.raises(ConfigError, match=r"\(\$HPO_CACHE_DIR or ~/.cache/hpo\) cannot be "
                                          r"used: it is a file; pass cache_dir"):
        hpo.run("demo", storage=f"sqlite:///{tmp_path / 'c.db'}", n_trials=1)
    assert not (tmp_path / "c.db").exists()


def _file(path: Path) -> Path:
    path.write_text("x")
    return path


def test_artifacts_naming_a_file_exits_2_before_any_trial(tmp_path, image_folder):
    """Once it burnt three trials and exited 1; now: exit 2, one line, no study stored."""
    from hpo.testing import write_study

    study = write_study(tmp_path / "t.toml", data=image_folder, name="artfile")
    (tmp_path / "art").write_text("a file where the folder goes")
    result = run_here("run", "--study", str(study), "--storage", "sqlite:///t.db",
                      "--artifacts", "art", "--n-trials", "1", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "hpo: error: --artifacts must be a folder, or a path where one can be made; it is a "
        "file, received 'art'"]
    assert not (tmp_path / "t.db").exists()


# -- the dashboard's port and files --------------------------------------------------------------

@pytest.mark.parametrize("port", [-1, 65536, 10**6])
def test_a_port_out_of_range_is_refused(port):
    from hpo.reporting import make_dashboard_server

    storage = optuna.storages.InMemoryStorage()
    with pytest.raises(InvalidSetting) as caught:
        make_dashboard_server(storage, None, port=port)
    assert caught.value.setting == "port" and "0 for any free port" in caught.value.problem


def test_port_0_listens_on_a_free_port():
    from hpo.reporting import make_dashboard_server

    server = make_dashboard_server(optuna.storages.InMemoryStorage(), None, port=0)
    try:
        assert 0 < server.server_port <= 65535
    finally:
        server.server_close()


def test_the_dashboard_cli_refuses_a_bad_port_and_a_token_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    optuna.create_study(study_name="s", storage="sqlite:///d.db")
    runner = CliRunner()
    result = runner.invoke(app, ["dashboard", "--storage", "sqlite:///d.db", "--port", "70000"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == (
        "hpo: error: --port must be from 1 to 65535, or 0 for any free port, received 70000")
    (tmp_path / "tok").mkdir()
    result = runner.invoke(app, ["dashboard", "--storage", "sqlite:///d.db", "--token-file",
                                 "tok"])
    assert result.exit_code == 2 and "is a folder; expected a file" in result.output


# -- outputs: export never replaces a file unasked; a file where a folder goes ---------------

@pytest.fixture()
def exportable(tmp_path, monkeypatch):
    """A study with one finished trial whose model file is kept under ./art."""
    from hpo.trial import model_path

    monkeypatch.chdir(tmp_path)
    study = optuna.create_study(study_name="ex", storage="sqlite:///ex.db")
    study.add_trial(optuna.trial.create_trial(value=0.5))
    kept = model_path(tmp_path / "art", "ex", 0)
    kept.parent.mkdir(parents=True)
    kept.write_bytes(b"the model")
    return tmp_path


def _export(*extra: str):
    return CliRunner().invoke(app, ["export", "ex", "--model", "0", "--storage",
                                    "sqlite:///ex.db", "--artifacts", "art", *extra])


def test_export_refuses_an_existing_file_unless_forced(exportable):
    target = exportable / "m.keras"
    target.write_bytes(b"precious")
    result = _export("--out", "m.keras")
    assert result.exit_code == 2
    assert "exists (a file); pass --force to replace it" in result.output
    assert target.read_bytes() == b"precious"
    result = _export("--out", "m.keras", "--force")
    assert result.exit_code == 0, result.output
    assert target.read_bytes() == b"the model"


def test_export_into_a_folder_writes_a_named_file_there(exportable):
    (exportable / "out").mkdir()
    result = _export("--out", "out")
    assert result.exit_code == 0, result.output
    written = exportable / "out" / "ex-trial0.keras"
    assert written.read_bytes() == b"the model" and f"wrote {Path('out') / written.name}" \
        in result.output
    again = _export("--out", "out")
    assert again.exit_code == 2 and "pass --force" in again.output


def test_report_out_naming_a_file_is_refused(tmp_path):
    from hpo.reporting import build_report, write_report

    study = optuna.create_study()
    study.add_trial(optuna.trial.create_trial(value=0.5, params={"optimizer": "Adam"},
                                              distributions={"optimizer": optuna.distributions
                                                             .CategoricalDistribution(["Adam"])}))
    (tmp_path / "rep").write_text("x")
    with pytest.raises(OutputError, match="is a file; expected a folder"):
        write_report(build_report(study, {}), "md", tmp_path / "rep")
