"""Study files: load a TOML study into frozen, validated dataclasses.

A study file names the data, the architectures, the grid (for ``--sampler grid``), the search
space (for TPE and the other samplers), the metric and the training defaults. Every error
names the file, the key, what was received and what is allowed.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from hpo.errors import ConfigError, HpoError
from hpo.models import MODELS
from hpo.optimizers import OPTIMIZER_INTERNALS, OPTIMIZERS, canonical_optimizer

__all__ = [
    "ParamSpec",
    "ArchitectureConfig",
    "DataConfig",
    "StudyConfig",
    "TRAINING_PARAMS",
    "METRICS",
    "OBJECTIVES",
    "PRUNERS",
    "BUNDLED_STUDIES_DIR",
    "available_studies",
    "load_study_config",
]

#: The training parameters every objective understands.
TRAINING_PARAMS: tuple[str, ...] = ("architecture", "optimizer", "learning_rate", "batch_size",
                                    "epochs")
#: Metric -> the direction that is better.
METRICS: dict[str, str] = {"val_accuracy": "maximize", "val_loss": "minimize"}
#: What a multi-objective study can optimise together -> the direction that is better: the
#: validation metric, the training time of the trial (seconds of ``fit``), the model size.
OBJECTIVES: dict[str, str] = {**METRICS, "train_time": "minimize", "n_params": "minimize"}
PRUNERS: tuple[str, ...] = ("none", "median", "successive_halving", "hyperband")
BUNDLED_DATA: tuple[str, ...] = ("digits",)


def _bundled_studies_dir() -> Path:
    """The shipped study files: ``hpo/_studies`` in an installed wheel (package data built
    from the top-level ``studies/`` folder), that folder itself in a checkout."""
    package = Path(__file__).resolve().parents[1]
    installed = package / "_studies"
    return installed if installed.is_dir() else package.parent / "studies"


BUNDLED_STUDIES_DIR = _bundled_studies_dir()

_MODEL_PARAMS: frozenset[str] = frozenset(p for m in MODELS.values() for p in m.hyperparameters)
_CONDITION_KEYS = ("architecture", "optimizer")
GridValue = str | int | float | bool


@dataclass(frozen=True)
class ParamSpec:
    """One parameter of a search space (not the grid).

    Attributes:
        name: Parameter name.
        choices: Categorical values, or None for a numeric range.
        low: Lower bound of a numeric range.
        high: Upper bound of a numeric range.
        log: Sample the range on a log scale.
        step: Step of the range, or None.
        integer: Whether the range is of integers.
        when: Conditions ``((param, allowed values), ...)``; the parameter is sampled only
            when every condition holds (e.g. momentum only for SGD and RMSprop).
    """

    name: str
    choices: tuple[GridValue, ...] | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    integer: bool = False
    when: tuple[tuple[str, tuple[GridValue, ...]], ...] = ()

    def applies(self, params: Mapping[str, Any]) -> bool:
        """Whether every condition holds for the parameters sampled so far."""
        return all(params.get(key) in allowed for key, allowed in self.when)

    def describe(self) -> str:
        """A short human description, e.g. ``float [1e-05, 0.1] log``."""
        if self.choices is not None:
            text = "{" + ", ".join(map(str, self.choices)) + "}"
        else:
            kind = "int" if self.integer else "float"
            text = f"{kind} [{self.low}, {self.high}]" + (" log" if self.log else "")
            text += f" step {self.step}" if self.step else ""
        for key, allowed in self.when:
            text += f" when {key} in {{{', '.join(map(str, allowed))}}}"
        return text


@dataclass(frozen=True)
class ArchitectureConfig:
    """How one architecture is used in a study.

    Attributes:
        name: Architecture name (a key of :data:`hpo.models.MODELS`).
        image_size: (height, width) images are resized to.
        weights: ``"none"``, ``"imagenet"`` or a weights file path (transfer models).
        hyperparameters: Fixed model hyperparameters for this study.
    """

    name: str
    image_size: tuple[int, int]
    weights: str
    hyperparameters: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DataConfig:
    """Where the images come from.

    Attributes:
        source: A folder path, or ``"bundled:NAME"`` for data an installed package ships.
        channels: 1 (grayscale) or 3 (RGB).
        split: Train / validation / test fractions for a folder that is not pre-split.
    """

    source: str
    channels: int = 3
    split: tuple[float, float, float] = (0.70, 0.15, 0.15)

    @property
    def bundled(self) -> str | None:
        """The bundled data set's name, or None for a folder."""
        return self.source.split(":", 1)[1] if self.source.startswith("bundled:") else None


@dataclass(frozen=True)
class StudyConfig:
    """A validated study file.

    Attributes:
        name: Study name (also the Optuna study name in the database).
        path: The file it was loaded from.
        description: One line about the study.
        metric: ``val_accuracy`` or ``val_loss``; the best epoch's value is the objective.
        direction: ``maximize`` or ``minimize``.
        seed: Base random seed of every trial.
        pruner: One of :data:`PRUNERS`.
        data: Where the images come from.
        training: Default value of every parameter the grid or space does not set.
        architectures: Per-architecture settings.
        grid: Parameter -> values, for ``--sampler grid``.
        space: Parameters for the other samplers, in sampling order.
        repeats: Training runs per configuration (different seeds); the value is the mean.
        objectives: For a multi-objective study, what is optimised: ``metric`` first, then
            e.g. ``train_time`` or ``n_params`` (see :data:`OBJECTIVES`); empty: ``metric``
            alone.
    """

    name: str
    path: Path
    description: str
    metric: str
    direction: str
    seed: int
    pruner: str
    data: DataConfig
    training: Mapping[str, Any]
    architectures: Mapping[str, ArchitectureConfig]
    grid: Mapping[str, tuple[GridValue, ...]]
    space: tuple[ParamSpec, ...]
    repeats: int = 1
    objectives: tuple[str, ...] = ()

    @property
    def objective_names(self) -> tuple[str, ...]:
        """What each trial's value(s) stand for, in order."""
        return self.objectives or (self.metric,)

    @property
    def directions(self) -> tuple[str, ...]:
        """``maximize`` / ``minimize`` per objective."""
        return tuple(OBJECTIVES[name] for name in self.objective_names)

    @property
    def multi_objective(self) -> bool:
        """Whether trials have several values (a Pareto front, no single best)."""
        return len(self.objective_names) > 1

    def with_objectives(self, names: str | tuple[str, ...]) -> "StudyConfig":
        """A copy optimising ``names`` (the CLI's ``--objectives val_accuracy,train_time``).

        Raises:
            ConfigError: Unknown or repeated objective, or the first is no validation
                metric.
        """
        if isinstance(names, str):
            names = tuple(n.strip() for n in names.split(",") if n.strip())
        objectives = _check_objectives(names, lambda message: ConfigError(
            f"--objectives: {message}"))
        return replace(self, metric=objectives[0], direction=METRICS[objectives[0]],
                       objectives=objectives if len(objectives) > 1 else ())

    @property
    def grid_size(self) -> int:
        """Number of points in the grid."""
        return math.prod(len(v) for v in self.grid.values()) if self.grid else 0

    def with_repeats(self, repeats: int) -> "StudyConfig":
        """A copy training each configuration ``repeats`` times (the CLI's ``--repeats``)."""
        if repeats < 1:
            raise ConfigError(f"repeats must be at least 1, received {repeats}")
        return replace(self, repeats=repeats)

    def with_data(self, source: str | Path) -> "StudyConfig":
        """A copy whose data comes from ``source`` (the CLI's ``--data``)."""
        return replace(self, data=replace(self.data, source=str(source)))


class _Reader:
    """Reads typed values out of a parsed TOML table, raising errors that name file and key."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.path}: key '{key}': {message}")

    def table(self, parent: Mapping[str, Any], key: str, prefix: str = "") -> dict[str, Any]:
        value = parent.get(key, {})
        if not isinstance(value, dict):
            raise self.error(prefix + key, f"expected a table, received {value!r}")
        return value

    def string(self, table: Mapping[str, Any], key: str, default: str | None, prefix: str = "",
               allowed: tuple[str, ...] | None = None) -> str:
        value = table.get(key, default)
        if value is None:
            raise self.error(prefix + key, "is required")
        if not isinstance(value, str):
            raise self.error(prefix + key, f"expected a string, received {value!r}")
        if allowed is not None and value not in allowed:
            raise self.error(prefix + key,
                             f"received {value!r}; expected one of {', '.join(allowed)}")
        return value

    def integer(self, table: Mapping[str, Any], key: str, default: int | None,
                prefix: str = "", minimum: int | None = None) -> int:
        value = table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(prefix + key, f"expected an integer, received {value!r}")
        if minimum is not None and value < minimum:
            raise self.error(prefix + key, f"expected an integer >= {minimum}, received {value}")
        return value

    def reject_unknown(self, table: Mapping[str, Any], allowed: tuple[str, ...] | frozenset[str],
                       prefix: str = "") -> None:
        for key in table:
            if key not in allowed:
                raise self.error(prefix + key,
                                 f"unknown key; expected one of {', '.join(sorted(allowed))}")


def _check_objectives(names: Any, error: Any) -> tuple[str, ...]:
    """Validates a list of objectives; ``error(message)`` builds the exception to raise."""
    if not isinstance(names, (list, tuple)) or not names or \
            not all(isinstance(n, str) for n in names):
        raise error(f"expected a list of objective names, received {names!r}")
    unknown = [n for n in names if n not in OBJECTIVES]
    if unknown:
        raise error(f"unknown objective {unknown[0]!r}; expected names from "
                    f"{', '.join(OBJECTIVES)}")
    if len(set(names)) != len(names):
        raise error(f"an objective is named twice in {list(names)!r}")
    if names[0] not in METRICS:
        raise error(f"the first objective must be the validation metric ({' or '.join(METRICS)})"
                    f", received {names[0]!r}; e.g. val_accuracy,train_time")
    return tuple(names)


def _known_params() -> tuple[str, ...]:
    return tuple(sorted({*TRAINING_PARAMS, *OPTIMIZER_INTERNALS, *_MODEL_PARAMS}))


def _check_value(reader: _Reader, key: str, name: str, value: Any) -> GridValue:
    """Validates one parameter value (a default, a grid value or a choice)."""
    if name == "architecture":
        if value not in MODELS:
            raise reader.error(key, f"unknown architecture {value!r}; expected one of "
                                    f"{', '.join(sorted(MODELS))}")
        return value
    if name == "optimizer":
        try:
            return canonical_optimizer(value)
        except HpoError as exc:
            raise reader.error(key, str(exc)) from None
    if name in ("batch_size", "epochs"):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise reader.error(key, f"expected a positive integer, received {value!r}")
        return value
    if name == "learning_rate":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise reader.error(key, f"expected a positive number, received {value!r}")
        return float(value)
    if not isinstance(value, (str, int, float, bool)):
        raise reader.error(key, f"expected a string, number or boolean, received {value!r}")
    return value


def _read_param_name(reader: _Reader, key: str, name: str) -> None:
    if name not in _known_params():
        raise reader.error(key, f"unknown parameter {name!r}; expected one of "
                                f"{', '.join(_known_params())}")


def _read_grid(reader: _Reader, table: Mapping[str, Any]) -> dict[str, tuple[GridValue, ...]]:
    grid: dict[str, tuple[GridValue, ...]] = {}
    for name, values in table.items():
        key = f"grid.{name}"
        _read_param_name(reader, key, name)
        if not isinstance(values, list) or not values:
            raise reader.error(key, f"expected a non-empty list of values, received {values!r}")
        checked = tuple(_check_value(reader, key, name, v) for v in values)
        if len(set(checked)) != len(checked):
            raise reader.error(key, f"has duplicate values: {values!r}")
        grid[name] = checked
    return grid


def _read_space(reader: _Reader, table: Mapping[str, Any]) -> tuple[ParamSpec, ...]:
    specs: list[ParamSpec] = []
    for name, body in table.items():
        key = f"space.{name}"
        _read_param_name(reader, key, name)
        if not isinstance(body, dict):
            raise reader.error(key, "expected a table such as {choices = [...]} or "
                                    f"{{low = 1, high = 10}}, received {body!r}")
        reader.reject_unknown(body, ("choices", "low", "high", "log", "step", "when"), key + ".")
        when = _read_when(reader, key, body.get("when", {}), specs)
        if "choices" in body:
            if set(body) - {"choices", "when"}:
                raise reader.error(key, "a parameter has either 'choices' or 'low'/'high', "
                                        "not both")
            choices = body["choices"]
            if not isinstance(choices, list) or not choices:
                raise reader.error(key + ".choices",
                                   f"expected a non-empty list, received {choices!r}")
            values = tuple(_check_value(reader, key + ".choices", name, v) for v in choices)
            if len(set(values)) != len(values):
                raise reader.error(key + ".choices", f"has duplicate values: {choices!r}")
            specs.append(ParamSpec(name=name, choices=values, when=when))
            continue
        if "low" not in body or "high" not in body:
            raise reader.error(key, "expected 'choices' or both 'low' and 'high'")
        low, high = body["low"], body["high"]
        for bound_key, bound in (("low", low), ("high", high)):
            if isinstance(bound, bool) or not isinstance(bound, (int, float)):
                raise reader.error(f"{key}.{bound_key}", f"expected a number, received {bound!r}")
        integer = isinstance(low, int) and isinstance(high, int) and name != "learning_rate"
        if not low < high:
            raise reader.error(key, f"expected low < high, received low={low}, high={high}")
        log = body.get("log", False)
        if not isinstance(log, bool):
            raise reader.error(key + ".log", f"expected true or false, received {log!r}")
        if log and low <= 0:
            raise reader.error(key + ".low", f"a log range needs low > 0, received {low}")
        step = body.get("step")
        if step is not None and (isinstance(step, bool) or not isinstance(step, (int, float))
                                 or step <= 0 or log):
            raise reader.error(key + ".step", "expected a positive number, and no step "
                                              f"with log = true; received {step!r}")
        for probe in (low, high):
            _check_value(reader, key, name, int(probe) if integer else float(probe))
        specs.append(ParamSpec(name=name, low=low, high=high, log=log, step=step,
                               integer=integer, when=when))
    return tuple(specs)


def _read_when(reader: _Reader, key: str, when: Any,
               earlier: list[ParamSpec]) -> tuple[tuple[str, tuple[GridValue, ...]], ...]:
    if not isinstance(when, dict):
        raise reader.error(key + ".when", f"expected a table such as "
                                          f"{{optimizer = ['SGD']}}, received {when!r}")
    conditions = []
    earlier_names = {s.name for s in earlier}
    for cond_name, allowed in when.items():
        cond_key = f"{key}.when.{cond_name}"
        if cond_name not in _CONDITION_KEYS:
            raise reader.error(cond_key, f"conditions may name {', '.join(_CONDITION_KEYS)}")
        if cond_name not in earlier_names:
            raise reader.error(cond_key, f"the condition's parameter must be listed earlier "
                                         f"in [space]; move space.{cond_name} above it")
        if not isinstance(allowed, list) or not allowed:
            raise reader.error(cond_key, f"expected a non-empty list, received {allowed!r}")
        conditions.append(
            (cond_name, tuple(_check_value(reader, cond_key, cond_name, v) for v in allowed))
        )
    return tuple(conditions)


def _read_architectures(reader: _Reader, table: Mapping[str, Any],
                        used: set[str]) -> dict[str, ArchitectureConfig]:
    reader.reject_unknown(table, frozenset(MODELS), "architectures.")
    result = {}
    for name in sorted(used | set(table)):
        spec = MODELS[name]
        prefix = f"architectures.{name}."
        body = reader.table(table, name, "architectures.")
        reader.reject_unknown(body, frozenset({"image_size", "weights", *spec.hyperparameters}),
                              prefix)
        size = body.get("image_size", list(spec.default_image_size))
        if (not isinstance(size, list) or len(size) != 2
                or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0
                           for s in size)):
            raise reader.error(prefix + "image_size",
                               f"expected [height, width] in pixels, received {size!r}")
        min_h, min_w = spec.min_image_size
        if size[0] < min_h or size[1] < min_w:
            raise reader.error(prefix + "image_size",
                               f"{size[0]}x{size[1]} is too small for {name}, which needs "
                               f"at least {min_h}x{min_w}")
        default_weights = "imagenet" if spec.transfer else "none"
        weights = reader.string(body, "weights", default_weights, prefix)
        if not spec.transfer and weights != "none":
            raise reader.error(prefix + "weights",
                               f"{name} is trained from scratch; expected 'none', "
                               f"received {weights!r}")
        hyper = {k: v for k, v in body.items() if k in spec.hyperparameters}
        result[name] = ArchitectureConfig(name=name, image_size=(size[0], size[1]),
                                          weights=weights, hyperparameters=hyper)
    return result


def _possible_values(name: str, training: Mapping[str, Any],
                     grid: Mapping[str, tuple[GridValue, ...]],
                     space: tuple[ParamSpec, ...]) -> set[GridValue]:
    """Values ``name`` can take under a grid and/or space, else its training default."""
    values: set[GridValue] = set(grid.get(name, ()))
    for spec in space:
        if spec.name == name and spec.choices is not None:
            values |= set(spec.choices)
    if not values and name in training:
        values.add(training[name])
    return values


def _check_applicability(reader: _Reader, training: Mapping[str, Any],
                         grid: Mapping[str, tuple[GridValue, ...]],
                         space: tuple[ParamSpec, ...]) -> None:
    """Every optimizer internal / model hyperparameter must apply wherever it can be sampled."""
    for section, names, conditions in (
        ("grid", list(grid), {}),
        ("space", [s.name for s in space], {s.name: dict(s.when) for s in space}),
    ):
        source_grid = grid if section == "grid" else {}
        source_space = space if section == "space" else ()
        optimizers = _possible_values("optimizer", training, source_grid, source_space)
        architectures = _possible_values("architecture", training, source_grid, source_space)
        for name in names:
            when = conditions.get(name, {})
            if name in OPTIMIZER_INTERNALS:
                for opt in when.get("optimizer", optimizers):
                    if name not in OPTIMIZERS[str(opt)]:
                        takers = [o for o, ps in OPTIMIZERS.items() if name in ps]
                        raise reader.error(
                            f"{section}.{name}",
                            f"{name} does not apply to optimizer {opt}; it applies to "
                            f"{', '.join(takers)}"
                            + ("; add when = {optimizer = [...]}" if section == "space" else "")
                        )
            elif name in _MODEL_PARAMS:
                for arch in when.get("architecture", architectures):
                    if name not in MODELS[str(arch)].hyperparameters:
                        takers = [m for m, s in MODELS.items() if name in s.hyperparameters]
                        raise reader.error(
                            f"{section}.{name}",
                            f"{name} does not apply to architecture {arch}; it applies to "
                            f"{', '.join(takers)}"
                            + ("; add when = {architecture = [...]}" if section == "space"
                               else "")
                        )


def _parse(path: Path, raw: Mapping[str, Any]) -> StudyConfig:
    reader = _Reader(path)
    reader.reject_unknown(raw, ("name", "description", "metric", "direction", "seed", "pruner",
                                "repeats", "data", "training", "architectures", "grid",
                                "space", "objectives"))
    name = reader.string(raw, "name", path.stem)
    if not name or any(c.isspace() for c in name):
        raise reader.error("name", f"expected a name without spaces, received {name!r}")
    objectives: tuple[str, ...] = ()
    if "objectives" in raw:
        objectives = _check_objectives(raw["objectives"],
                                       lambda message: reader.error("objectives", message))
        if "metric" in raw and raw["metric"] != objectives[0]:
            raise reader.error("objectives", f"the first objective must be the metric "
                                             f"{raw['metric']!r}, received {objectives[0]!r}")
    metric = reader.string(raw, "metric", objectives[0] if objectives else "val_accuracy",
                           allowed=tuple(METRICS))
    direction = reader.string(raw, "direction", METRICS[metric],
                              allowed=("maximize", "minimize"))
    if direction != METRICS[metric]:
        raise reader.error("direction", f"{metric} is to {METRICS[metric]}, "
                                        f"received {direction!r}")

    data_table = reader.table(raw, "data")
    reader.reject_unknown(data_table, ("source", "channels", "split"), "data.")
    source = reader.string(data_table, "source", None, "data.")
    if source.startswith("bundled:") and source.split(":", 1)[1] not in BUNDLED_DATA:
        raise reader.error("data.source", f"unknown bundled data {source!r}; expected one of "
                           + ", ".join(f"bundled:{b}" for b in BUNDLED_DATA) + " or a folder")
    channels = reader.integer(data_table, "channels", 3, "data.")
    if channels not in (1, 3):
        raise reader.error("data.channels", f"expected 1 or 3, received {channels}")
    split = data_table.get("split", [0.70, 0.15, 0.15])
    if (not isinstance(split, list) or len(split) != 3
            or not all(isinstance(s, (int, float)) and not isinstance(s, bool) and s > 0
                       for s in split)
            or not math.isclose(sum(split), 1.0, abs_tol=1e-6)):
        raise reader.error("data.split", "expected [train, validation, test] fractions, each "
                                         f"> 0, summing to 1; received {split!r}")
    data = DataConfig(source=source, channels=channels,
                      split=(float(split[0]), float(split[1]), float(split[2])))

    training_table = reader.table(raw, "training")
    training: dict[str, Any] = {"optimizer": "Adam", "learning_rate": 0.001,
                                "batch_size": 32, "epochs": 10}
    for key, value in training_table.items():
        _read_param_name(reader, f"training.{key}", key)
        training[key] = _check_value(reader, f"training.{key}", key, value)

    grid = _read_grid(reader, reader.table(raw, "grid"))
    space = _read_space(reader, reader.table(raw, "space"))
    if not grid and not space:
        raise reader.error("grid", "a study needs a [grid] or a [space] table (or both)")
    if "architecture" not in training:
        candidates = sorted(_possible_values("architecture", {}, grid, space), key=str)
        if not candidates:
            raise reader.error("training.architecture",
                               "is required when neither [grid] nor [space] sets architecture")
        training["architecture"] = candidates[0]
    _check_applicability(reader, training, grid, space)
    used = {str(a) for a in _possible_values("architecture", training, grid, ())}
    used |= {str(a) for a in _possible_values("architecture", training, {}, space)}
    architectures = _read_architectures(reader, reader.table(raw, "architectures"), used)

    pruner = reader.string(raw, "pruner", "none", allowed=PRUNERS)
    if len(objectives) > 1 and pruner != "none":
        raise reader.error("pruner", f"received {pruner!r}, but Optuna cannot prune a "
                                     "multi-objective trial; set pruner = \"none\"")

    return StudyConfig(
        name=name,
        path=path,
        description=reader.string(raw, "description", ""),
        metric=metric,
        direction=direction,
        seed=reader.integer(raw, "seed", 0, minimum=0),
        pruner=pruner,
        data=data,
        training=training,
        architectures=architectures,
        grid=grid,
        space=space,
        repeats=reader.integer(raw, "repeats", 1, minimum=1),
        objectives=objectives if len(objectives) > 1 else (),
    )


def available_studies(search_dirs: tuple[Path, ...] | None = None) -> dict[str, Path]:
    """Study name -> file, from ``./studies`` (first) and the studies ``hpo`` ships."""
    dirs = search_dirs if search_dirs is not None else (Path.cwd() / "studies",
                                                        BUNDLED_STUDIES_DIR)
    found: dict[str, Path] = {}
    for directory in dirs:
        if directory.is_dir():
            for file in sorted(directory.glob("*.toml")):
                found.setdefault(file.stem, file)
    return found


def load_study_config(name_or_path: str | Path) -> StudyConfig:
    """Loads and validates a study by name (``firearms``) or by path (``my.toml``).

    A name is looked up in ``./studies/`` first, then in the studies ``hpo`` ships.

    Raises:
        ConfigError: Unknown study, unreadable or malformed file, or an invalid value.
    """
    text = str(name_or_path)
    path = Path(text).expanduser()
    if not (text.endswith(".toml") or path.is_file()):
        known = available_studies()
        if text not in known:
            raise ConfigError(
                f"unknown study {text!r}; known studies: {', '.join(sorted(known)) or 'none'} "
                "(or give the path of a .toml study file)"
            )
        path = known[text]
    if not path.is_file():
        raise ConfigError(f"study file {str(path)!r} does not exist; give the path of a "
                          ".toml study file or the name of a known study")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.__class__.__name__}: {exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: malformed TOML: {exc}") from None
    return _parse(path, raw)
