"""Study files generated from hpo's own JSON Schema (studies/study.schema.json): every one
the schema accepts loads, or is refused with one line; and what a trial does first with a
loaded one (sample its parameters, build its optimizer, build its model) succeeds, so no
trial fails on something the loader could have seen.
"""

from __future__ import annotations

import copy
import itertools
import json
import tomllib
from pathlib import Path

import jsonschema
import optuna
import pytest
import tomli_w
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.internal.conjecture import utils as conjecture_utils
from hypothesis_jsonschema import _from_schema, from_schema

from hpo.config import BUNDLED_STUDIES_DIR, load_study_config
from hpo.errors import HpoError
from hpo.models import MODELS
from hpo.optimizers import build_optimizer
from hpo.search import resolve, suggest


class _Many:
    """hypothesis-jsonschema 0.23.1 (the latest) draws an object's keys with the
    ``elements.more()`` / ``elements.reject()`` of Hypothesis's internal ``many``, which
    newer Hypothesis turned into a context manager iterated with ``for``: the same steps,
    behind the old two methods."""

    def __init__(self, data, **sizes) -> None:
        self._many = conjecture_utils.many(data, **sizes)
        self._many.__enter__()
        self._steps = iter(self._many)

    def more(self) -> bool:
        if next(self._steps, StopIteration) is StopIteration:
            self._many.__exit__(None, None, None)
            return False
        return True

    def reject(self, why: str | None = None) -> None:
        self._many.reject(why)


if not hasattr(conjecture_utils.many, "more"):
    _from_schema.cu = type("cu", (), {"many": _Many})

SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "studies" /
                     "study.schema.json").read_text())

#: Largest values the generated files may use where size only costs time (a model of
#: Dense(10**9) is valid, and needs a bigger machine than a test's).
_SMALL_INTS = {"dense_units": 32, "filters": 8, "conv_blocks": 4, "epochs": 50,
               "batch_size": 512}


def _small(schema: dict) -> dict:
    """The published schema, tightened so that examples stay small and cheap to build:
    short strings, short lists, few keys, images near each architecture's minimum."""
    schema = copy.deepcopy(schema)
    props = schema["properties"]
    props["name"]["maxLength"] = 6
    props["description"]["maxLength"] = 6
    data = schema["$defs"]["DataSection"]["properties"]
    data["source"] = {"enum": ["bundled:digits", "images"]}
    # the sum of the fractions is no JSON Schema rule: one triple that sums to 1, one not
    data["split"] = {"enum": [[0.5, 0.25, 0.25], [0.5, 0.5, 0.5]]}
    for table in ("training", "grid", "space", "architectures"):
        props[table]["maxProperties"] = 2

    def limit(value_schema: dict, name: str) -> None:
        for option in value_schema.get("anyOf", [value_schema]):
            if option.get("type") == "integer" and name in _SMALL_INTS:
                option["maximum"] = _SMALL_INTS[name]
            if option.get("type") == "string" and "pattern" in option:  # hidden_layers
                option["pattern"] = r"^[1-9][0-9]?(-[1-9][0-9]?){0,2}$"

    for name, value in props["training"]["properties"].items():
        limit(value, name)
    for name, value in props["grid"]["properties"].items():
        value["maxItems"] = 3
        limit(value["items"], name)
    for name, value in props["space"]["properties"].items():
        value["properties"]["choices"]["maxItems"] = 3
        limit(value["properties"]["choices"]["items"], name)
        for bound in ("low", "high"):
            if bound in value["properties"]:
                limit(value["properties"][bound], name)
    for name, value in props["architectures"]["properties"].items():
        least = min(MODELS[name].min_image_size)
        value["properties"]["image_size"]["items"]["maximum"] = least + 8
        for param, param_schema in value["properties"].items():
            limit(param_schema, param)
    return schema


def _likely(schema: dict) -> dict:
    """:func:`_small`, narrowed further to files that mostly load (an architecture in
    [training], one metric, fractions that sum to 1), so that many reach the first steps of
    a trial."""
    schema = _small(schema)
    props = schema["properties"]
    for name in ("direction", "objectives"):
        del props[name]
    schema["required"] = ["data", "training"]
    props["training"]["required"] = ["architecture"]
    props["training"]["maxProperties"] = 3
    data = schema["$defs"]["DataSection"]["properties"]
    data["split"] = {"enum": [[0.5, 0.25, 0.25]]}
    data["channels"] = {"enum": [3]}  # 1 is refused for pretrained weights, tested apart
    return schema


def test_the_shipped_studies_conform_to_the_published_schema():
    for path in sorted(BUNDLED_STUDIES_DIR.glob("*.toml")):
        jsonschema.validate(tomllib.loads(path.read_text()), SCHEMA)


_BUILT: dict[tuple, int] = {}


def _check_first_steps(config) -> None:
    """What a trial does before training: sample its parameters, resolve them, build the
    optimizer (for every grid point, and one sampled space point) and the model."""
    points = []
    for grid in (True, False):  # a grid and a search are studies of their own, as in hpo
        if (config.grid if grid else config.space):
            study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
            points.append(suggest(study.ask(), config, grid=grid))
    names = list(config.grid)
    for values in itertools.islice(itertools.product(*config.grid.values()), 30):
        points.append(dict(zip(names, values)))
    for sampled in points:
        params = resolve(config, sampled)
        build_optimizer(params.optimizer, params.learning_rate, **params.optimizer_kwargs)
    params = resolve(config, points[0])
    arch = config.architectures[params.architecture]
    key = (params.architecture, arch.image_size, config.data.channels,
           tuple(sorted(params.model_kwargs.items())))
    # a transfer backbone takes seconds to build: each once per image size
    heavy = MODELS[params.architecture].transfer
    if key in _BUILT or (heavy and sum(k[0] == key[0] for k in _BUILT) >= 1):
        return
    from hpo.models import build_model

    model = build_model(params.architecture, input_shape=(*arch.image_size,
                                                          config.data.channels),
                        num_classes=2, weights="none", **params.model_kwargs)
    _BUILT[key] = model.count_params()


_SETTINGS = settings(max_examples=20, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture,
                                            HealthCheck.too_slow, HealthCheck.filter_too_much,
                                            HealthCheck.data_too_large])


def _load_or_one_line(tmp_path: Path, document: dict):
    """The loaded study, or None after checking that the refusal is one line naming the
    file."""
    path = tmp_path / "generated.toml"
    path.write_text(tomli_w.dumps(document))
    try:
        config = load_study_config(path)
    except HpoError as exc:
        assert "\n" not in str(exc) and str(path) in str(exc), str(exc)
        event("refused: " + str(exc).split(": ", 1)[1][:60])
        return None
    event("loaded")
    return config


@_SETTINGS
# deferred: building a schema's strategy takes seconds, which every test process would
# pay while collecting, whether or not it runs the test
@given(document=st.deferred(lambda: from_schema(_small(SCHEMA))))
def test_schema_valid_study_files_load_or_are_refused_in_one_line(tmp_path, document):
    config = _load_or_one_line(tmp_path, document)
    if config is not None:
        _check_first_steps(config)


@pytest.mark.filterwarnings("ignore")
@_SETTINGS
@given(document=st.deferred(lambda: from_schema(_likely(SCHEMA))))
def test_loaded_study_files_pass_a_trials_first_steps(tmp_path, document):
    config = _load_or_one_line(tmp_path, document)
    if config is not None:
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        _check_first_steps(config)
