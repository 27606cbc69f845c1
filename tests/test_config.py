from __future__ import annotations

import re
from pathlib import Path

import pytest

from hpo.config import available_studies, load_study_config
from hpo.errors import ConfigError

THESIS_OPTIMIZERS = ("Adadelta", "Adagrad", "Adam", "Adamax", "Ftrl", "Nadam", "RMSprop", "SGD")


def test_every_shipped_study_loads():
    names = set(available_studies())
    assert {"firearms", "pistols-smartphones", "cifar10", "cats-dogs", "fashion-mnist",
            "demo"} <= names
    for name in names:
        config = load_study_config(name)
        assert config.name == name
        assert config.grid or config.space


def test_firearms_grid_is_the_thesis_grid_exactly():
    config = load_study_config("firearms")
    assert dict(config.grid) == {
        "architecture": ("alexnet", "inception_v3"),
        "optimizer": THESIS_OPTIMIZERS,
        "batch_size": (32, 64, 128, 256),
        "learning_rate": (0.01, 0.001, 0.0001),
        "epochs": (10, 200),
    }
    assert config.grid_size == 384
    assert config.architectures["alexnet"].image_size == (227, 227)
    assert config.architectures["inception_v3"].weights == "imagenet"
    assert config.pruner == "none"
    # The TPE space goes beyond the grid.
    space = {s.name: s for s in config.space}
    assert space["learning_rate"].log and space["learning_rate"].choices is None
    assert {"momentum", "epsilon", "beta_1", "dropout", "dense_units",
            "trainable_fraction"} <= set(space)
    assert dict(space["momentum"].when) == {"optimizer": ("SGD", "RMSprop")}


def test_cifar10_has_seed_002s_27_point_grid():
    config = load_study_config("cifar10")
    assert config.grid_size == 27
    assert config.grid["epochs"] == (5, 10, 15)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "study.toml"
    path.write_text(text)
    return path


BASE = """
[data]
source = "bundled:digits"
[training]
architecture = "small_cnn"
[grid]
optimizer = ["Adam"]
"""


@pytest.mark.parametrize("text, fragment", [
    ("this is = = not toml", "malformed TOML"),
    ("bogus = 1\n" + BASE, "key 'bogus': unknown key"),
    (BASE + "\nbogus = 1\n", "key 'grid.bogus': unknown parameter 'bogus'"),
    (BASE.replace('["Adam"]', '["Adamw"]'), "unknown optimizer 'Adamw'"),
    (BASE.replace('"small_cnn"', "'lenet'"), "unknown architecture 'lenet'"),
    (BASE.replace('"small_cnn"', "'alexnet'") + "[architectures.alexnet]\n"
                                                "image_size = [32, 32]\n",
     "too small for alexnet"),
    (BASE.replace('architecture = "small_cnn"', ""), "key 'training.architecture'"),
    (BASE.replace('["Adam"]', '["Adam"]\nmomentum = [0.9]'),
     "momentum does not apply to optimizer Adam"),
    (BASE + "[space.momentum]\nlow = 0.0\nhigh = 0.9\n",
     "momentum does not apply to optimizer Adam"),
    (BASE + "[space.learning_rate]\nlow = 0.1\nhigh = 0.01\n", "expected low < high"),
    (BASE + "[space.learning_rate]\nlow = 0\nhigh = 0.1\nlog = true\n", "needs low > 0"),
    (BASE + "[space.warp]\nchoices = [1]\n", "unknown parameter 'warp'"),
    (BASE.replace('"bundled:digits"', '"bundled:imagenet"'), "unknown bundled data"),
    ("metric = 'f1'\n" + BASE, "expected one of val_accuracy, val_loss"),
    ("[grid]\noptimizer = ['Adam']\n", "key 'data.source': is required"),
    (BASE.replace("[grid]", "[data2]"), "unknown key"),
    ("[data]\nsource = 'x'\nsplit = [0.5, 0.5, 0.5]\n" + "[grid]\noptimizer = ['Adam']\n",
     "summing to 1"),
])
def test_bad_study_files_say_file_key_and_what_is_allowed(tmp_path, text, fragment):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_study_config(path)
    message = str(info.value)
    assert fragment in message
    assert str(path) in message or "unknown study" in message
    assert "\n" not in message


def test_unknown_study_lists_the_known_ones():
    with pytest.raises(ConfigError, match="unknown study 'nope'; known studies: .*firearms"):
        load_study_config("nope")


def test_a_studies_folder_in_the_working_directory_is_found(tmp_path, monkeypatch):
    (tmp_path / "studies").mkdir()
    (tmp_path / "studies" / "mine.toml").write_text(BASE)
    monkeypatch.chdir(tmp_path)
    assert load_study_config("mine").name == "mine"


def test_with_data_overrides_the_source():
    config = load_study_config("firearms").with_data("/elsewhere")
    assert config.data.source == "/elsewhere"


def test_the_published_json_schema_is_current_and_strict():
    import json

    from typer.testing import CliRunner

    from hpo.cli import app

    result = CliRunner().invoke(app, ["schema"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    published = Path(__file__).resolve().parents[1] / "studies" / "study.schema.json"
    assert json.loads(published.read_text()) == printed, \
        "studies/study.schema.json is stale: run 'hpo schema > studies/study.schema.json'"
    assert printed["additionalProperties"] is False

    def descriptions(node: object) -> list[str]:
        if isinstance(node, dict):
            own = [node["description"]] if isinstance(node.get("description"), str) else []
            return own + [d for v in node.values() for d in descriptions(v)]
        if isinstance(node, list):
            return [d for v in node for d in descriptions(v)]
        return []

    # A library message's "$setting" becomes "--setting" in the CLI; the schema is for study
    # files, where no such rendering happens.
    written = descriptions(printed)
    assert written and not [d for d in written if re.search(r"\$[a-z_]", d)]
    assert {"data", "training", "grid", "space", "architectures"} <= set(printed["properties"])
    space = printed["properties"]["space"]
    assert space["additionalProperties"] is False
    assert all(p["additionalProperties"] is False for p in space["properties"].values())
    assert printed["properties"]["training"]["properties"]["dropout"] == {
        "type": "number", "minimum": 0, "exclusiveMaximum": 1}


def test_study_settings_are_frozen():
    from hpo.config import StudyFile

    parsed = StudyFile.model_validate({"data": {"source": "bundled:digits"},
                                       "grid": {"architecture": ["small_cnn"]}})
    with pytest.raises(Exception, match="frozen"):
        parsed.seed = 3


def test_a_step_too_small_to_count_the_range_is_one_line(tmp_path):
    from hpo.errors import ConfigError

    path = tmp_path / "s.toml"
    path.write_text('name = "s"\n[data]\nsource = "images"\n[training]\narchitecture = '
                    '"small_cnn"\n[space.learning_rate]\nlow = 1e-300\nhigh = 1e300\n'
                    'step = 1e-300\n')
    with pytest.raises(ConfigError, match="space.learning_rate.step.*more values than"):
        load_study_config(path)
