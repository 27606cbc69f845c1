"""Sampler names -> Optuna samplers (``grid``, ``tpe``, ``random``, or Optuna's class names)."""

from __future__ import annotations

import optuna

from hpo.config import StudyConfig
from hpo.errors import ConfigError
from hpo.search_space import grid_search_space

__all__ = ["SAMPLERS", "canonical_sampler", "make_sampler"]

#: Canonical name -> Optuna class name, for messages and ``--sampler``.
SAMPLERS: dict[str, str] = {
    "grid": "GridSampler",
    "tpe": "TPESampler",
    "random": "RandomSampler",
    "qmc": "QMCSampler",
    "cmaes": "CmaEsSampler",
    "nsgaii": "NSGAIISampler",
}
_ALIASES = {**{k: k for k in SAMPLERS}, **{v.lower(): k for k, v in SAMPLERS.items()}}


def canonical_sampler(name: str) -> str:
    """``TPESampler`` or ``tpe`` -> ``tpe``.

    Raises:
        ConfigError: Unknown sampler.
    """
    try:
        return _ALIASES[name.lower()]
    except KeyError:
        raise ConfigError(
            f"unknown sampler {name!r}; expected one of {', '.join(SAMPLERS)} "
            f"(or {', '.join(SAMPLERS.values())})"
        ) from None


def make_sampler(name: str, config: StudyConfig, seed: int | None) -> optuna.samplers.BaseSampler:
    """Builds the sampler ``name`` for ``config``.

    Raises:
        ConfigError: Unknown sampler, or ``grid`` for a study without a [grid] table.
    """
    kind = canonical_sampler(name)
    if kind == "grid":
        if not config.grid:
            raise ConfigError(f"{config.path}: study {config.name!r} has no [grid] table; "
                              "add one, or use --sampler tpe")
        return optuna.samplers.GridSampler(grid_search_space(config), seed=seed)
    if not config.space:
        raise ConfigError(f"{config.path}: study {config.name!r} has no [space] table; add "
                          "one, or use --sampler grid")
    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True,
                                          constant_liar=True)
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if kind == "qmc":
        return optuna.samplers.QMCSampler(seed=seed)
    if kind == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    return optuna.samplers.NSGAIISampler(seed=seed)
