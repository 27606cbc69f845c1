"""Every parameter a study file may set, with its type and range: one table that both the
loader's checks (:func:`hpo.config._schema.check_value`) and the published JSON Schema are
made from, so that an editor and ``hpo run`` refuse the same values.

The ranges are what the trial would otherwise fail on (Keras refuses a dropout outside
[0, 1], an Ftrl ``learning_rate_power`` above 0, a ``Dense(0)``), or what makes no sense to
train with (a momentum or beta of 1 never forgets, a learning rate of 0 never learns).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Literal

from hpo.models import MODELS
from hpo.optimizers import OPTIMIZERS

__all__ = ["ParamRange", "PARAMS", "ARCHITECTURE_MINIMUMS", "HIDDEN_LAYERS_PATTERN",
           "param_schema", "value_problem"]

#: ``hidden_layers``: positive dense widths joined by '-', such as ``50-50``.
HIDDEN_LAYERS_PATTERN = r"^0*[1-9][0-9]*(-0*[1-9][0-9]*)*$"


@dataclass(frozen=True)
class ParamRange:
    """The values one parameter may take.

    Attributes:
        kind: ``int``, ``float`` (an integer is accepted too), ``bool`` or ``str``.
        ge, gt, le, lt: Bounds (inclusive / exclusive) of a number.
        enum: The allowed strings (case-insensitive for ``optimizer``).
        pattern: A regular expression a string must match.
        words: The range in words, for messages ("from 0 to 1, 1 excluded").
    """

    kind: Literal["int", "float", "bool", "str"]
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    enum: tuple[str, ...] = ()
    pattern: str | None = None
    words: str = ""

    @property
    def numeric(self) -> bool:
        return self.kind in ("int", "float")


def _fraction(words: str = "from 0 to 1, 1 excluded") -> ParamRange:
    return ParamRange("float", ge=0, lt=1, words=words)


PARAMS: dict[str, ParamRange] = {
    "architecture": ParamRange("str", enum=tuple(sorted(MODELS)),
                               words="one of " + ", ".join(sorted(MODELS))),
    "optimizer": ParamRange("str", enum=tuple(OPTIMIZERS),
                            words="one of " + ", ".join(OPTIMIZERS)),
    "learning_rate": ParamRange("float", gt=0, words="a number > 0"),
    "batch_size": ParamRange("int", ge=1, words="an integer >= 1"),
    "epochs": ParamRange("int", ge=1, words="an integer >= 1"),
    # optimizer internals (Keras 3 keyword arguments)
    "momentum": _fraction(),
    "nesterov": ParamRange("bool", words="true or false"),
    "amsgrad": ParamRange("bool", words="true or false"),
    "centered": ParamRange("bool", words="true or false"),
    "beta_1": _fraction(),
    "beta_2": _fraction(),
    "rho": _fraction(),
    "epsilon": ParamRange("float", gt=0, words="a number > 0"),
    "initial_accumulator_value": ParamRange("float", ge=0, words="a number >= 0"),
    "learning_rate_power": ParamRange("float", le=0, words="a number <= 0"),
    "l1_regularization_strength": ParamRange("float", ge=0, words="a number >= 0"),
    "l2_regularization_strength": ParamRange("float", ge=0, words="a number >= 0"),
    "beta": ParamRange("float", ge=0, words="a number >= 0"),
    # model hyperparameters
    "dropout": _fraction(),
    "dense_units": ParamRange("int", ge=0, words="an integer >= 0 (0: no extra dense layer, "
                                                 "where the architecture allows it)"),
    "trainable_fraction": ParamRange("float", ge=0, le=1, words="from 0 to 1"),
    "conv_blocks": ParamRange("int", ge=1, words="an integer >= 1"),
    "filters": ParamRange("int", ge=1, words="an integer >= 1"),
    "batch_norm": ParamRange("bool", words="true or false"),
    "hidden_layers": ParamRange("str", pattern=HIDDEN_LAYERS_PATTERN,
                                words="positive widths joined by '-', such as \"50-50\""),
}

#: (architecture, parameter) -> the least value that architecture builds with, where it is
#: above the parameter's own range (AlexNet and the small CNN always have a hidden dense
#: layer: Keras refuses Dense(0)).
ARCHITECTURE_MINIMUMS: dict[tuple[str, str], int] = {
    ("alexnet", "dense_units"): 1,
    ("small_cnn", "dense_units"): 1,
}


def value_problem(name: str, value: Any) -> str | None:
    """What is wrong with ``value`` for parameter ``name`` ("expected ..., received ..."),
    or None when it is allowed. The name must be one of :data:`PARAMS`."""
    spec = PARAMS[name]
    received = f"received {value!r}"
    if spec.kind == "bool":
        return None if isinstance(value, bool) else f"expected true or false, {received}"
    if spec.kind == "str":
        if name == "hidden_layers" and isinstance(value, int) and not isinstance(value, bool):
            value = str(value)  # hidden_layers = 100 is one layer of 100
        if not isinstance(value, str):
            return f"expected {spec.words}, {received}"
        if spec.enum and value.lower() not in {e.lower() for e in spec.enum}:
            return f"expected {spec.words}, {received}"
        if spec.pattern and not re.match(spec.pattern, value):
            return f"expected {spec.words}, {received}"
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"expected {spec.words}, {received}"
    if spec.kind == "int" and not isinstance(value, int):
        return f"expected {spec.words}, {received}"
    if not math.isfinite(value):
        return f"expected a finite number ({spec.words}), {received}"
    if ((spec.ge is not None and value < spec.ge) or (spec.gt is not None and value <= spec.gt)
            or (spec.le is not None and value > spec.le)
            or (spec.lt is not None and value >= spec.lt)):
        return f"expected {spec.words}, {received}"
    return None


def param_schema(name: str) -> dict[str, Any]:
    """The JSON Schema of one value of parameter ``name``."""
    spec = PARAMS[name]
    if spec.kind == "bool":
        return {"type": "boolean"}
    if spec.kind == "str":
        if spec.enum:
            extra = [e.lower() for e in spec.enum if e.lower() != e]
            return {"type": "string", "enum": [*spec.enum, *extra]}
        schema: dict[str, Any] = {"type": "string", "pattern": spec.pattern}
        if name == "hidden_layers":
            return {"anyOf": [schema, {"type": "integer", "minimum": 1}]}
        return schema
    schema = {"type": "integer" if spec.kind == "int" else "number"}
    for key, word in (("ge", "minimum"), ("gt", "exclusiveMinimum"), ("le", "maximum"),
                      ("lt", "exclusiveMaximum")):
        bound = getattr(spec, key)
        if bound is not None:
            schema[word] = bound
    return schema
