"""A study's parameters as Optuna sees them: distributions, the grid, and a space hash.

``suggest`` asks an Optuna trial for every parameter of the grid or the space (in file order,
honouring ``when`` conditions); ``resolve`` merges what was sampled with the study's defaults
into the flat :class:`TrialParams` the objective trains with.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any, Mapping

from hpo.config import GridValue, ParamSpec, StudyConfig
from hpo.models import MODELS
from hpo.optimizers import OPTIMIZER_INTERNALS, OPTIMIZERS

if TYPE_CHECKING:
    import optuna

__all__ = ["TrialParams", "grid_search_space", "suggest", "resolve", "space_hash",
           "describe_space", "distribution", "to_space"]


@dataclass(frozen=True)
class TrialParams:
    """Everything one training run needs, flat.

    Attributes:
        architecture: Model name.
        optimizer: Canonical optimizer name.
        learning_rate: Learning rate.
        batch_size: Batch size.
        epochs: Epochs to train (the most; a pruner may stop earlier).
        optimizer_kwargs: Optimizer internals (momentum, epsilon, ...).
        model_kwargs: Model hyperparameters (dropout, dense_units, ...).
    """

    architecture: str
    optimizer: str
    learning_rate: float
    batch_size: int
    epochs: int
    optimizer_kwargs: Mapping[str, Any]
    model_kwargs: Mapping[str, Any]


def grid_search_space(config: StudyConfig) -> dict[str, list[GridValue]]:
    """The ``search_space`` argument of :class:`optuna.samplers.GridSampler`."""
    return {name: list(values) for name, values in config.grid.items()}


def suggest(trial: "optuna.Trial", config: StudyConfig, *, grid: bool) -> dict[str, Any]:
    """Samples the study's parameters through ``trial``.

    Args:
        trial: The running Optuna trial.
        config: The study.
        grid: Sample the grid (GridSampler) rather than the space.

    Returns:
        Parameter name -> sampled value, as stored in the trial.
    """
    params: dict[str, Any] = {}
    if grid:
        for name, values in config.grid.items():
            params[name] = trial.suggest_categorical(name, list(values))
        return params
    for spec in config.space:
        if not spec.applies(params):
            continue
        if spec.choices is not None:
            params[spec.name] = trial.suggest_categorical(spec.name, list(spec.choices))
        elif spec.integer:
            low, high = spec.bounds
            params[spec.name] = trial.suggest_int(spec.name, int(low), int(high),
                                                  step=int(spec.step or 1), log=spec.log)
        else:
            low, high = spec.bounds
            params[spec.name] = trial.suggest_float(spec.name, float(low), float(high),
                                                    step=spec.step, log=spec.log)
    return params


def distribution(spec: ParamSpec) -> "optuna.distributions.BaseDistribution":
    """The distribution :func:`suggest` samples ``spec`` from (the same Optuna stores)."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    if spec.choices is not None:
        return CategoricalDistribution(list(spec.choices))
    low, high = spec.bounds
    if spec.integer:
        return IntDistribution(int(low), int(high), log=spec.log, step=int(spec.step or 1))
    return FloatDistribution(float(low), float(high), log=spec.log, step=spec.step)


def to_space(config: StudyConfig, params: Mapping[str, Any], trained_with: Mapping[str, Any]
             ) -> tuple[dict[str, Any], dict[str, "optuna.distributions.BaseDistribution"]] | str:
    """A grid trial's parameters as a trial of the space would have them, to give a search
    the grid's results as history.

    Args:
        config: The study file (its space and its training defaults: what the search
            trains with).
        params: The grid trial's parameters.
        trained_with: The training defaults the grid trial was trained with (its study's).

    Returns:
        The parameters and their distributions, or why the trial is no trial of the space:
        a value outside it, a searched parameter the grid left to the optimizer's or model's
        own default, or a parameter the space does not search that the grid trained at
        another value than the search does.
    """
    full = {**trained_with, **params}
    converted: dict[str, Any] = {}
    distributions: dict[str, Any] = {}
    for spec in config.space:
        if not spec.applies(converted):
            continue
        if spec.name not in full:
            return f"{spec.name} is searched but the grid left it at its default"
        dist = distribution(spec)
        value = full[spec.name]
        try:
            value = int(value) if spec.integer else float(value) if spec.choices is None \
                else value
            inside = dist._contains(dist.to_internal_repr(value))  # Optuna internal
        except (TypeError, ValueError):
            inside = False
        if not inside:
            return f"{spec.name} outside the space"
        converted[spec.name] = value
        distributions[spec.name] = dist
    try:
        grid_run = resolve(replace(config, training=dict(trained_with)), params)
        search_run = resolve(config, converted)
    except (KeyError, ValueError, TypeError):
        return "architecture or optimizer not in the study file"
    for item in fields(TrialParams):
        old, new = getattr(grid_run, item.name), getattr(search_run, item.name)
        if old == new:
            continue
        if isinstance(old, Mapping):
            names = sorted(k for k in {*old, *new} if old.get(k) != new.get(k))
            return f"{', '.join(names)} not searched, trained at another value"
        return f"{item.name} not searched, trained at another value"
    return converted, distributions


def resolve(config: StudyConfig, sampled: Mapping[str, Any]) -> TrialParams:
    """Merges training defaults, the architecture's settings and ``sampled`` into params.

    Parameters that do not apply to the chosen optimizer or architecture (a default that the
    study sets for another one) are left out.
    """
    merged: dict[str, Any] = {**config.training, **sampled}
    architecture = str(merged["architecture"])
    arch_config = config.architectures[architecture]
    model_params = MODELS[architecture].hyperparameters
    model_kwargs = dict(arch_config.hyperparameters)
    model_kwargs.update({k: v for k, v in merged.items() if k in model_params})
    optimizer = str(merged["optimizer"])
    accepted = OPTIMIZERS[optimizer]
    optimizer_kwargs = {k: v for k, v in merged.items()
                        if k in OPTIMIZER_INTERNALS and k in accepted}
    return TrialParams(
        architecture=architecture,
        optimizer=optimizer,
        learning_rate=float(merged["learning_rate"]),
        batch_size=int(merged["batch_size"]),
        epochs=int(merged["epochs"]),
        optimizer_kwargs=optimizer_kwargs,
        model_kwargs=model_kwargs,
    )


def _canonical_space(config: StudyConfig, *, grid: bool) -> dict[str, Any]:
    if grid:
        return {"grid": {k: list(v) for k, v in config.grid.items()}}
    return {"space": [
        {"name": s.name, "choices": list(s.choices) if s.choices is not None else None,
         "low": s.low, "high": s.high, "log": s.log, "step": s.step, "integer": s.integer,
         "when": [[k, list(v)] for k, v in s.when]}
        for s in config.space
    ]}


def space_hash(config: StudyConfig, *, grid: bool) -> str:
    """A short, stable hash of the grid (or the space) and the training defaults.

    Workers joining a study compare it, so that an edited study file cannot mix trials of
    two different searches.
    """
    canonical = {
        **_canonical_space(config, grid=grid),
        "training": dict(sorted(config.training.items())),
        "architectures": {
            name: {"image_size": list(a.image_size), "weights": a.weights,
                   "hyperparameters": dict(sorted(a.hyperparameters.items()))}
            for name, a in sorted(config.architectures.items())
        },
        "metric": config.metric,
        "repeats": config.repeats,
    }
    text = json.dumps(canonical, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def describe_space(config: StudyConfig, *, grid: bool) -> dict[str, Any]:
    """A JSON-ready description of what ``hpo space`` prints."""
    if grid:
        return {
            "study": config.name,
            "sampler": "grid",
            "size": config.grid_size,
            "parameters": {k: list(v) for k, v in config.grid.items()},
            "fixed": {k: v for k, v in config.training.items() if k not in config.grid},
            "space_hash": space_hash(config, grid=True),
        }
    names = {s.name for s in config.space}
    return {
        "study": config.name,
        "sampler": "space",
        "parameters": {s.name: s.describe() for s in config.space},
        "fixed": {k: v for k, v in config.training.items() if k not in names},
        "space_hash": space_hash(config, grid=False),
    }
