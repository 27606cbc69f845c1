"""Study files: load a TOML study into frozen, validated dataclasses.

A study file names the data, the architectures, the grid (for ``--sampler grid``), the search
space (for TPE and the other samplers), the metric and the training defaults. It is validated
once, by the pydantic models of :mod:`hpo.config._schema`; every error names the file, the
key, what was received and what is allowed.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

import pydantic

from hpo.config._constants import (
    BUNDLED_DATA,
    Direction,
    METRICS,
    OBJECTIVES,
    PRUNERS,
    TRAINING_PARAMS,
    GridValue,
)
from hpo.config._schema import (
    Rule,
    StudyFile,
    check_objectives,
    check_value,
    effective_training,
    is_integer_range,
    one_line,
    used_architectures,
)
from hpo.errors import ConfigError
from hpo.models import MODELS

__all__ = [
    "ParamSpec",
    "ArchitectureConfig",
    "DataConfig",
    "StudyConfig",
    "TRAINING_PARAMS",
    "METRICS",
    "OBJECTIVES",
    "PRUNERS",
    "BUNDLED_DATA",
    "BUNDLED_STUDIES_DIR",
    "GridValue",
    "available_studies",
    "load_study_config",
]


def _bundled_studies_dir() -> Path:
    """The shipped study files: ``hpo/_studies`` in an installed wheel (package data built
    from the top-level ``studies/`` folder), that folder itself in a checkout."""
    package = Path(__file__).resolve().parents[1]
    installed = package / "_studies"
    return installed if installed.is_dir() else package.parent / "studies"


BUNDLED_STUDIES_DIR = _bundled_studies_dir()


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

    @property
    def bounds(self) -> tuple[float, float]:
        """``(low, high)`` of a numeric range (a categorical parameter has none)."""
        if self.low is None or self.high is None:
            raise ValueError(f"parameter {self.name!r} has choices, not a range")
        return self.low, self.high

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
        metric: ``val_accuracy`` or ``val_loss``; its value at the result epoch is the
            objective.
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
        result_epoch: ``final`` (the thesis's method) or ``best``: the epoch whose weights
            give a trial's value, test metrics, figures and kept model (``best``: the epoch
            with the best ``metric``, its weights restored before evaluating).
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
    result_epoch: str = "final"

    @property
    def objective_names(self) -> tuple[str, ...]:
        """What each trial's value(s) stand for, in order."""
        return self.objectives or (self.metric,)

    @property
    def directions(self) -> tuple[Direction, ...]:
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
        try:
            objectives = check_objectives(names, "objectives")
        except Rule as rule:
            raise ConfigError(f"$objectives: {rule.message}") from None
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


def _space(file: StudyFile) -> tuple[ParamSpec, ...]:
    specs = []
    for name, spec in file.space.items():
        when = tuple((key, tuple(check_value("", key, v) for v in allowed))
                     for key, allowed in spec.when.items())
        if spec.choices is not None:
            specs.append(ParamSpec(name=name, when=when,
                                   choices=tuple(check_value("", name, v) for v in spec.choices)))
        else:
            specs.append(ParamSpec(name=name, low=spec.low, high=spec.high, log=spec.log,
                                   step=spec.step, integer=is_integer_range(name, spec),
                                   when=when))
    return tuple(specs)


def _architectures(file: StudyFile) -> dict[str, ArchitectureConfig]:
    result = {}
    for name in used_architectures(file):
        spec = MODELS[name]
        body = file.architectures.get(name, {})
        size = body.get("image_size", list(spec.default_image_size))
        result[name] = ArchitectureConfig(
            name=name, image_size=(size[0], size[1]),
            weights=body.get("weights", "imagenet" if spec.transfer else "none"),
            hyperparameters={k: v for k, v in body.items() if k in spec.hyperparameters})
    return result


def _to_config(path: Path, file: StudyFile) -> StudyConfig:
    """The validated file as the frozen :class:`StudyConfig` the rest of hpo reads."""
    training = effective_training(file)
    metric = file.effective_metric
    objectives = tuple(str(o) for o in file.objectives or ())
    assert file.data is not None  # the schema requires it
    split = file.data.split
    return StudyConfig(
        name=file.name if file.name is not None else path.stem,
        path=path,
        description=file.description,
        metric=metric,
        direction=METRICS[metric],
        seed=file.seed,
        pruner=file.pruner,
        data=DataConfig(source=file.data.source, channels=file.data.channels,
                        split=(float(split[0]), float(split[1]), float(split[2]))),
        training=training,
        architectures=_architectures(file),
        grid={k: tuple(check_value("", k, v) for v in values) for k, values in file.grid.items()},
        space=_space(file),
        repeats=file.repeats,
        objectives=objectives if len(objectives) > 1 else (),
        result_epoch=file.result_epoch,
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
    try:
        study_file = StudyFile.model_validate(raw)
    except pydantic.ValidationError as exc:
        raise one_line(path, exc) from None
    return _to_config(path, study_file)
