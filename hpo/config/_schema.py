"""The study file's schema: pydantic models (strict, no unknown keys, frozen) for the TOML
as written, with the cross-field rules as validators, and one place that turns a
``ValidationError`` into the one-line message ``FILE: key 'data.split': ...``.

``hpo schema`` prints :func:`study_file_schema` (JSON Schema), so an editor (Taplo, Even
Better TOML) can validate a study file as it is typed.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field, model_validator

from hpo.config._constants import (
    BUNDLED_DATA,
    CONDITION_KEYS,
    METRICS,
    MODEL_PARAMS,
    OBJECTIVES,
    PRUNERS,
    TRAINING_DEFAULTS,
    TRAINING_PARAMS,
)
from hpo.config._params import ARCHITECTURE_MINIMUMS, PARAMS, param_schema, value_problem
from hpo.errors import ConfigError, HpoError
from hpo.models import MODELS
from hpo.optimizers import OPTIMIZER_INTERNALS, OPTIMIZERS, canonical_optimizer

__all__ = ["StudyFile", "SpaceParam", "DataSection", "Rule", "study_file_schema",
           "one_line", "check_objectives", "check_value", "known_params", "possible_values",
           "effective_training"]

#: A parameter value in a study file: checked per parameter by :func:`check_value`.
Value = Annotated[Any, Field(json_schema_extra={"type": ["string", "number", "integer",
                                                         "boolean"]})]


#: A list of parameter values: its list-ness is checked by the rules, after the parameter's
#: name (so that an unknown name is reported as such).
ValueList = Annotated[Any, Field(json_schema_extra={"type": "array", "minItems": 1})]


class Rule(ValueError):
    """A broken cross-field rule, at ``key`` (dotted, relative to where it is raised)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class DataSection(_Section):
    """``[data]``: where the images come from."""

    source: str = Field(description="An image folder, or bundled:NAME for data a package "
                                    "ships (" + ", ".join(f"bundled:{b}" for b in BUNDLED_DATA)
                                    + ").")
    channels: Literal[1, 3] = Field(3, description="1 (grayscale) or 3 (RGB).")
    split: list[Value] = Field([0.70, 0.15, 0.15], description="Train, validation and test "
                               "fractions of a folder that is not pre-split, summing to 1.",
                               json_schema_extra={
                                   "items": {"type": "number", "exclusiveMinimum": 0,
                                             "exclusiveMaximum": 1},
                                   "minItems": 3, "maxItems": 3})

    @model_validator(mode="after")
    def _rules(self) -> DataSection:
        if self.source.startswith("bundled:") and self.source.split(":", 1)[1] not in \
                BUNDLED_DATA:
            raise Rule("source", f"unknown bundled data {self.source!r}; expected one of "
                       + ", ".join(f"bundled:{b}" for b in BUNDLED_DATA) + " or a folder")
        split = self.split
        if (len(split) != 3
                or not all(isinstance(s, (int, float)) and not isinstance(s, bool)
                           and math.isfinite(s) and s > 0 for s in split)
                or not math.isclose(sum(split), 1.0, abs_tol=1e-6)):
            raise Rule("split", "expected [train, validation, test] fractions, each > 0, "
                                f"summing to 1; received {split!r}")
        return self


class SpaceParam(_Section):
    """``[space.NAME]``: categorical ``choices``, or a ``low``/``high`` range."""

    choices: list[Value] | None = Field(None, description="Categorical values.")
    low: Value = Field(None, description="Lower bound of a numeric range.")
    high: Value = Field(None, description="Upper bound of a numeric range.")
    log: bool = Field(False, description="Sample the range on a log scale.")
    step: Value = Field(None, description="Step of the range (not with log).")
    when: dict[str, list[Value]] = Field(
        {}, description="Sample only when each named parameter (architecture, optimizer) "
                        "takes one of the listed values, e.g. {optimizer = ['SGD']}.")

    @model_validator(mode="after")
    def _rules(self) -> SpaceParam:
        given = self.model_fields_set
        if self.choices is not None:
            if given - {"choices", "when"}:
                raise Rule("", "a parameter has either 'choices' or 'low'/'high', not both")
            if not self.choices:
                raise Rule("choices", f"expected a non-empty list, received {self.choices!r}")
            return self
        if "low" not in given or "high" not in given:
            raise Rule("", "expected 'choices' or both 'low' and 'high'")
        for key, bound in (("low", self.low), ("high", self.high)):
            if isinstance(bound, bool) or not isinstance(bound, (int, float)) or \
                    not math.isfinite(bound):
                raise Rule(key, f"expected a finite number, received {bound!r}")
        if not self.low < self.high:
            raise Rule("", f"expected low < high, received low={self.low}, high={self.high}")
        if self.log and self.low <= 0:
            raise Rule("low", f"a log range needs low > 0, received {self.low}")
        step = self.step
        if step is not None and (isinstance(step, bool) or not isinstance(step, (int, float))
                                 or not math.isfinite(step) or step <= 0 or self.log):
            raise Rule("step", "expected a positive number, and no step with log = true; "
                               f"received {step!r}")
        return self


class StudyFile(_Section):
    """A study file (TOML): data, metric, training defaults, architectures, grid, space."""

    name: str | None = Field(None, description="Study name (default: the file's stem).",
                             json_schema_extra=lambda s: _replace(s, {
                                 "type": "string", "pattern": r"^\S+$"}))
    description: str = Field("", description="One line about the study.")
    metric: Literal["val_accuracy", "val_loss"] | None = Field(
        None, description="The validation metric the best epoch is chosen by.")
    direction: Literal["maximize", "minimize"] | None = Field(
        None, description="Must agree with the metric (it is implied by it).")
    result_epoch: Literal["final", "best"] = Field(
        "final", description="Which epoch's weights a trial's value, test metrics, figures "
                             "and kept model come from: the final epoch (the thesis's "
                             "method), or the epoch with the best metric (its weights "
                             "restored before evaluating and saving).")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="Base random seed of every trial.")
    # A Literal built from the tuple (pydantic reads it at run time; mypy wants literals)
    pruner: Literal[PRUNERS] = Field("none", description="Optuna pruner.")  # type: ignore[valid-type]
    repeats: int = Field(1, ge=1, description="Training runs per configuration (seeds seed, "
                                              "seed+1, ...); the value is their mean.")
    objectives: list[Value] | None = Field(
        None, description="Multi-objective search: the metric first, then train_time and/or "
                          "n_params.",
        json_schema_extra=lambda s: _replace(s, {
            "type": "array", "minItems": 1, "uniqueItems": True,
            "items": {"enum": list(OBJECTIVES)}}))
    data: DataSection | None = Field(None, description="[data]: where the images come "
                                                        "from (required).")
    training: dict[str, Value] = Field({}, description="Default of every parameter the grid "
                                                       "or space does not set.",
                                       json_schema_extra=lambda s: _properties(
                                           s, {n: param_schema(n) for n in PARAMS}))
    architectures: dict[str, dict[str, Value]] = Field(
        {}, description="Per architecture: image_size = [h, w], weights, hyperparameters.",
        json_schema_extra=lambda s: _properties(s, {n: _architecture_schema(n)
                                                    for n in sorted(MODELS)}))
    grid: dict[str, ValueList] = Field({}, description="Parameter -> values, searched "
                                                       "point by point when the run's "
                                                       "sampler is grid.",
                                       json_schema_extra=lambda s: _properties(
                                           s, {n: _values_schema(n) for n in PARAMS}))
    space: dict[str, SpaceParam] = Field({}, description="Parameters for TPE and the other "
                                                         "samplers, in sampling order.",
                                         json_schema_extra=lambda s: _properties(
                                             s, {n: _space_schema(n) for n in PARAMS}))

    @model_validator(mode="after")
    def _rules(self) -> StudyFile:
        name = self.name
        if name is not None and (not name or any(c.isspace() for c in name)):
            raise Rule("name", f"expected a name without spaces, received {name!r}")
        if self.objectives is not None:
            objectives = check_objectives(self.objectives, "objectives")
            if self.metric is not None and self.metric != objectives[0]:
                raise Rule("objectives", f"the first objective must be the metric "
                                         f"{self.metric!r}, received {objectives[0]!r}")
        metric = self.effective_metric
        if self.direction is not None and self.direction != METRICS[metric]:
            raise Rule("direction", f"{metric} is to {METRICS[metric]}, received "
                                    f"{self.direction!r}")
        if self.data is None:
            raise Rule("data.source", "is required")
        for key, value in self.training.items():
            check_param_name(f"training.{key}", key)
            check_value(f"training.{key}", key, value)
        for key, values in self.grid.items():
            check_param_name(f"grid.{key}", key)
            if not isinstance(values, list) or not values:
                raise Rule(f"grid.{key}", f"expected a non-empty list of values, received "
                                          f"{values!r}")
            checked = [check_value(f"grid.{key}", key, v) for v in values]
            if len(set(checked)) != len(checked):
                raise Rule(f"grid.{key}", f"has duplicate values: {values!r}")
        earlier: list[str] = []
        for key, spec in self.space.items():
            _check_space_param(key, spec, earlier)
            earlier.append(key)
        if not self.grid and not self.space:
            raise Rule("grid", "a study needs a [grid] or a [space] table (or both)")
        if "architecture" not in self.training and not possible_values(
                "architecture", {}, self.grid, self.space):
            raise Rule("training.architecture",
                       "is required when neither [grid] nor [space] sets architecture")
        _check_applicability(self)
        _check_architectures(self)
        if self.objectives is not None and len(self.objectives) > 1 and self.pruner != "none":
            raise Rule("pruner", f"received {self.pruner!r}, but Optuna cannot prune a "
                                 "multi-objective trial; set pruner = \"none\"")
        return self

    @property
    def effective_metric(self) -> str:
        """The metric: as written, else the first objective, else val_accuracy."""
        if self.metric is not None:
            return self.metric
        return str(self.objectives[0]) if self.objectives else "val_accuracy"


def _without_null(schema: Any) -> Any:
    """``schema`` without the ``null`` alternatives of optional fields: TOML has no null, a
    key is set or left out."""
    if isinstance(schema, list):
        return [_without_null(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    result = {k: _without_null(v) for k, v in schema.items()}
    options = result.get("anyOf")
    if isinstance(options, list):
        kept = [o for o in options if o != {"type": "null"}]
        if len(kept) == 1:
            del result["anyOf"]
            result = {**kept[0], **result}
        else:
            result["anyOf"] = kept
    if result.get("default", 0) is None:
        del result["default"]
    return result


def _replace(schema: dict[str, Any], new: dict[str, Any]) -> None:
    """Replaces a field's generated schema (keeping its title, description and default):
    TOML has no null, and the rules are tighter than the Python type."""
    kept: dict[str, Any] = {k: schema[k] for k in ("title", "description", "default")
                            if k in schema}
    schema.clear()
    schema.update(kept, **new)


def _properties(schema: dict[str, Any], properties: dict[str, Any]) -> None:
    """A table whose keys are known: each with its own schema, no other key."""
    schema.pop("additionalProperties", None)
    schema.update(type="object", properties=properties, additionalProperties=False)


def _values_schema(name: str) -> dict[str, Any]:
    """A non-empty list of distinct values of parameter ``name``."""
    return {"type": "array", "minItems": 1, "uniqueItems": True, "items": param_schema(name)}


def _space_schema(name: str) -> dict[str, Any]:
    """``[space.NAME]``: choices, or (for a number) a low/high range with a step or log."""
    properties: dict[str, Any] = {
        "choices": _values_schema(name),
        "when": {"type": "object", "additionalProperties": False,
                 "properties": {c: _values_schema(c) for c in CONDITION_KEYS}},
    }
    if PARAMS[name].numeric:
        step: dict[str, Any] = ({"type": "integer", "minimum": 1} if PARAMS[name].kind == "int"
                                else {"type": "number", "exclusiveMinimum": 0})
        properties.update(low=param_schema(name), high=param_schema(name),
                          log={"type": "boolean"}, step=step)
    schema: dict[str, Any] = {"type": "object", "additionalProperties": False,
                              "properties": properties}
    if PARAMS[name].numeric:  # choices, or a range: not both
        schema["anyOf"] = [
            {"required": ["choices"], "properties": {k: False for k in
                                                     ("low", "high", "step", "log")}},
            {"required": ["low", "high"], "properties": {"choices": False}}]
    else:
        schema["required"] = ["choices"]
    return schema


def _architecture_schema(name: str) -> dict[str, Any]:
    """``[architectures.NAME]``: image size (at least the architecture's minimum), weights,
    and its hyperparameters."""
    spec = MODELS[name]
    properties: dict[str, Any] = {
        # [height, width]; both minimums are equal (no tuple schema: every draft reads it)
        "image_size": {"type": "array", "minItems": 2, "maxItems": 2,
                       "items": {"type": "integer", "minimum": min(spec.min_image_size)}},
        "weights": {"type": "string"} if spec.transfer else {"enum": ["none"]},
    }
    for param in sorted(spec.hyperparameters):
        properties[param] = param_schema(param)
        least = ARCHITECTURE_MINIMUMS.get((name, param))
        if least is not None:
            properties[param]["minimum"] = least
    return {"type": "object", "additionalProperties": False, "properties": properties}


def study_file_schema() -> dict[str, Any]:
    """The JSON Schema of a study file (for editors that validate TOML)."""
    schema: dict[str, Any] = _without_null(StudyFile.model_json_schema())
    schema["required"] = ["data"]  # optional in the model only so that its message is ours
    schema["anyOf"] = [{"required": ["grid"]}, {"required": ["space"]}]
    for table in ("grid", "space"):
        schema["properties"][table]["minProperties"] = 1
    source = schema["$defs"]["DataSection"]["properties"]["source"]
    source["anyOf"] = [{"enum": [f"bundled:{b}" for b in BUNDLED_DATA]},
                       {"not": {"pattern": "^bundled:"}}]
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "hpo study file"
    return schema


# --- rules shared by the file's validators and the run's overrides --------------------------

def check_objectives(names: Any, key: str) -> tuple[str, ...]:
    """Validates a list of objectives (metric first). Raises :class:`Rule` at ``key``."""
    if not isinstance(names, (list, tuple)) or not names or \
            not all(isinstance(n, str) for n in names):
        raise Rule(key, f"expected a list of objective names, received {names!r}")
    unknown = [n for n in names if n not in OBJECTIVES]
    if unknown:
        raise Rule(key, f"unknown objective {unknown[0]!r}; expected names from "
                        f"{', '.join(OBJECTIVES)}")
    if len(set(names)) != len(names):
        raise Rule(key, f"an objective is named twice in {list(names)!r}")
    if names[0] not in METRICS:
        raise Rule(key, f"the first objective must be the validation metric "
                        f"({' or '.join(METRICS)}), received {names[0]!r}; e.g. "
                        "val_accuracy,train_time")
    return tuple(names)


def known_params() -> tuple[str, ...]:
    """Every parameter name a study file may set."""
    return tuple(sorted({*TRAINING_PARAMS, *OPTIMIZER_INTERNALS, *MODEL_PARAMS}))


def check_param_name(key: str, name: str) -> None:
    if name not in known_params():
        raise Rule(key, f"unknown parameter {name!r}; expected one of "
                        f"{', '.join(known_params())}")


def check_value(key: str, name: str, value: Any) -> Any:
    """Validates one parameter value (a default, a grid value or a choice); returns it in
    canonical form (optimizer names as Keras spells them, learning rates as floats)."""
    if name == "architecture":
        if value not in MODELS:
            raise Rule(key, f"unknown architecture {value!r}; expected one of "
                            f"{', '.join(sorted(MODELS))}")
        return value
    if name == "optimizer":
        try:
            return canonical_optimizer(value)
        except HpoError as exc:
            raise Rule(key, str(exc)) from None
    if name in PARAMS:
        problem = value_problem(name, value)
        if problem is not None:
            raise Rule(key, problem)
        return float(value) if name == "learning_rate" else value
    if not isinstance(value, (str, int, float, bool)):
        raise Rule(key, f"expected a string, number or boolean, received {value!r}")
    return value


def _check_space_param(name: str, spec: SpaceParam, earlier: list[str]) -> None:
    key = f"space.{name}"
    check_param_name(key, name)
    for cond_name, allowed in spec.when.items():
        cond_key = f"{key}.when.{cond_name}"
        if cond_name not in CONDITION_KEYS:
            raise Rule(cond_key, f"conditions may name {', '.join(CONDITION_KEYS)}")
        if cond_name not in earlier:
            raise Rule(cond_key, f"the condition's parameter must be listed earlier in "
                                 f"[space]; move space.{cond_name} above it")
        if not allowed:
            raise Rule(cond_key, f"expected a non-empty list, received {allowed!r}")
        for value in allowed:
            check_value(cond_key, cond_name, value)
    if spec.choices is not None:
        values = [check_value(key + ".choices", name, v) for v in spec.choices]
        if len(set(values)) != len(values):
            raise Rule(key + ".choices", f"has duplicate values: {spec.choices!r}")
        return
    kind = PARAMS[name].kind
    if kind in ("bool", "str"):
        raise Rule(key, f"{name} takes {PARAMS[name].words}, not a low/high range; "
                        "give choices = [...] instead")
    for bound in ("low", "high"):
        check_value(f"{key}.{bound}", name, getattr(spec, bound))
    if spec.step is None:
        return
    span, step = spec.high - spec.low, spec.step
    if kind == "int" and not isinstance(step, int):
        raise Rule(key + ".step", f"{name} is an integer; expected an integer step >= 1, "
                                  f"received {step!r}")
    if step > span:
        raise Rule(key + ".step", f"step {step} is larger than high - low = {span}, which "
                                  "leaves one value; use a smaller step or drop the "
                                  "parameter from [space]")
    count = span / step
    if not math.isfinite(count):
        raise Rule(key + ".step", f"step {step} makes high - low = {span} more values than a "
                                  "float can count; use a larger step or drop the step")
    if not math.isclose(count, round(count), rel_tol=0, abs_tol=1e-9):
        fitting = spec.low + math.floor(count + 1e-9) * step
        raise Rule(key + ".step", f"step {step} does not divide high - low = {span} "
                                  f"(Optuna would move high to {fitting:g}); set high = "
                                  f"{fitting:g} or a step that divides the range")


def is_integer_range(name: str, spec: SpaceParam) -> bool:
    """Whether a ``low``/``high`` range samples integers: the parameter is an integer one
    (batch_size, epochs, dense_units, ...), whatever the bounds look like."""
    return name in PARAMS and PARAMS[name].kind == "int"


def possible_values(name: str, training: dict[str, Any], grid: dict[str, list[Any]],
                    space: dict[str, SpaceParam]) -> set[Any]:
    """Values ``name`` can take under a grid and/or space, else its training default."""
    values: set[Any] = {check_value("", name, v) for v in grid.get(name, ())}
    spec = space.get(name)
    if spec is not None and spec.choices is not None:
        values |= {check_value("", name, v) for v in spec.choices}
    if not values and name in training:
        values.add(check_value("", name, training[name]))
    return values


def effective_training(file: StudyFile) -> dict[str, Any]:
    """The training defaults with the file's [training] over them, in canonical form, and
    an architecture: the first (by name) the grid or space can take when none is set."""
    training = {**TRAINING_DEFAULTS,
                **{k: check_value("", k, v) for k, v in file.training.items()}}
    if "architecture" not in training:
        training["architecture"] = sorted(possible_values("architecture", {}, file.grid,
                                                          file.space), key=str)[0]
    return training


def _check_applicability(file: StudyFile) -> None:
    """Every optimizer internal / model hyperparameter must apply wherever it can be
    sampled."""
    training = effective_training(file)
    for section, names in (("grid", list(file.grid)), ("space", list(file.space))):
        grid = file.grid if section == "grid" else {}
        space = file.space if section == "space" else {}
        optimizers = possible_values("optimizer", training, grid, space)
        architectures = possible_values("architecture", training, grid, space)
        for name in names:
            when = {k: [check_value("", k, v) for v in vs]
                    for k, vs in file.space[name].when.items()} if section == "space" else {}
            if name in OPTIMIZER_INTERNALS:
                for opt in when.get("optimizer", optimizers):
                    if name not in OPTIMIZERS[str(opt)]:
                        takers = [o for o, ps in OPTIMIZERS.items() if name in ps]
                        raise Rule(f"{section}.{name}",
                                   f"{name} does not apply to optimizer {opt}; it applies to "
                                   f"{', '.join(takers)}"
                                   + ("; add when = {optimizer = [...]}"
                                      if section == "space" else ""))
            elif name in MODEL_PARAMS:
                for arch in when.get("architecture", architectures):
                    if name not in MODELS[str(arch)].hyperparameters:
                        takers = [m for m, s in MODELS.items() if name in s.hyperparameters]
                        raise Rule(f"{section}.{name}",
                                   f"{name} does not apply to architecture {arch}; it applies "
                                   f"to {', '.join(takers)}"
                                   + ("; add when = {architecture = [...]}"
                                      if section == "space" else ""))


def used_architectures(file: StudyFile) -> list[str]:
    """The architectures a study trains (by default, grid, space or an [architectures]
    table), sorted."""
    training = effective_training(file)
    used = {str(a) for a in possible_values("architecture", training, file.grid, {})}
    used |= {str(a) for a in possible_values("architecture", training, {}, file.space)}
    return sorted(used | set(file.architectures))


def _check_architectures(file: StudyFile) -> None:
    for name in file.architectures:
        if name not in MODELS:
            raise Rule(f"architectures.{name}", "unknown key; expected one of "
                                                f"{', '.join(sorted(MODELS))}")
    for name in used_architectures(file):
        spec = MODELS[name]
        prefix = f"architectures.{name}."
        body = file.architectures.get(name, {})
        allowed = sorted({"image_size", "weights", *spec.hyperparameters})
        for key in body:
            if key not in allowed:
                raise Rule(prefix + key, f"unknown key; expected one of {', '.join(allowed)}")
        size = body.get("image_size", list(spec.default_image_size))
        if (not isinstance(size, list) or len(size) != 2
                or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0
                           for s in size)):
            raise Rule(prefix + "image_size",
                       f"expected [height, width] in pixels, received {size!r}")
        min_h, min_w = spec.min_image_size
        if size[0] < min_h or size[1] < min_w:
            raise Rule(prefix + "image_size", f"{size[0]}x{size[1]} is too small for {name}, "
                                              f"which needs at least {min_h}x{min_w}")
        weights = body.get("weights", "imagenet" if spec.transfer else "none")
        if not isinstance(weights, str):
            raise Rule(prefix + "weights", f"expected a string, received {weights!r}")
        if not spec.transfer and weights != "none":
            raise Rule(prefix + "weights", f"{name} is trained from scratch; expected "
                                           f"'none', received {weights!r}")
        channels = file.data.channels if file.data is not None else 3
        if spec.transfer and weights not in ("none", "") and channels != 3:
            raise Rule("data.channels", f"{name} starts from pretrained weights "
                                        f"({weights!r}), which need 3-channel images; set "
                                        f"channels = 3, or weights = \"none\" in "
                                        f"[architectures.{name}]")
        for key in spec.hyperparameters:
            if key in body:
                check_value(prefix + key, key, body[key])
            for where, value in _values_for(file, key, name):
                least = ARCHITECTURE_MINIMUMS.get((name, key))
                if least is not None and isinstance(value, (int, float)) and value < least:
                    raise Rule(where, f"{name} needs {key} >= {least} (it always has that "
                                      f"layer), received {value!r}")
        if name == "small_cnn":
            # each conv block halves the image (2x2 max pooling): it must stay >= 1 pixel
            for where, value in _values_for(file, "conv_blocks", name):
                if isinstance(value, int) and 2 ** min(value, 64) > min(size):
                    raise Rule(where, f"{value} conv blocks halve a {size[0]}x{size[1]} image "
                                      f"{value} times, to nothing; use at most "
                                      f"{int(math.log2(min(size)))} blocks or a larger "
                                      f"[architectures.small_cnn] image_size")


def _values_for(file: StudyFile, name: str, architecture: str) -> list[tuple[str, Any]]:
    """Every value of model hyperparameter ``name`` the file may train ``architecture``
    with, and where it is written: the architecture's table, [training], the grid, and the
    space's choices or bounds (unless its ``when`` leaves the architecture out)."""
    found: list[tuple[str, Any]] = []
    body = file.architectures.get(architecture, {})
    if name in body:
        found.append((f"architectures.{architecture}.{name}", body[name]))
    if name in file.training:
        found.append((f"training.{name}", file.training[name]))
    for value in file.grid.get(name, []) if isinstance(file.grid.get(name), list) else []:
        found.append((f"grid.{name}", value))
    spec = file.space.get(name)
    if spec is not None:
        allowed = spec.when.get("architecture")
        if allowed is None or architecture in allowed:
            values = spec.choices if spec.choices is not None else [spec.low, spec.high]
            found.extend((f"space.{name}", v) for v in values)
    return found


# --- one line per validation error ------------------------------------------------------------

_TYPE_WORDS = {
    "dict_type": "a table", "model_type": "a table", "model_attributes_type": "a table",
    "list_type": "a list", "tuple_type": "a list", "string_type": "a string",
    "int_type": "an integer", "bool_type": "true or false", "float_type": "a number",
}


def _fields_at(loc: tuple[Any, ...]) -> list[str] | None:
    """The keys allowed where ``loc`` points (for an unknown key's message)."""
    model: Any = StudyFile
    for part in loc:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is None:
            return None
        annotation = field.annotation
        args = getattr(annotation, "__args__", ())
        model = next((a for a in (annotation, *args)
                      if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if model is None:
            return None
    return list(model.model_fields)


def one_line(path: Path, exc: pydantic.ValidationError) -> ConfigError:
    """The first error of ``exc`` as ``FILE: key 'a.b': what was received, what is
    allowed``."""
    error = exc.errors(include_url=False)[0]
    loc = tuple(error["loc"])
    parts = [str(p) for p in loc]
    kind = error["type"]
    received = error.get("input")
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, Rule):
        parts = [p for p in (*parts, *cause.key.split(".")) if p]
        message = cause.message
    elif kind == "extra_forbidden":
        allowed = _fields_at(loc[:-1])
        message = "unknown key" + (f"; expected one of {', '.join(sorted(allowed))}"
                                   if allowed else "")
    elif kind == "missing":
        message = "is required"
    elif kind == "literal_error":
        expected = str((error.get("ctx") or {}).get("expected", ""))
        expected = expected.replace("'", "").replace(" or ", ", ")
        message = f"received {received!r}; expected one of {expected}"
    elif kind in ("greater_than_equal", "greater_than"):
        limit = (error.get("ctx") or {}).get("ge", (error.get("ctx") or {}).get("gt"))
        message = f"expected an integer >= {limit}, received {received!r}"
    elif kind in _TYPE_WORDS:
        message = f"expected {_TYPE_WORDS[kind]}, received {received!r}"
    else:
        message = f"{error['msg']}, received {received!r}"
    key = ".".join(parts)
    text = f"{path}: key '{key}': {message}" if key else f"{path}: {message}"
    return ConfigError(" ".join(text.split("\n")))
