"""Sampler names -> Optuna samplers (``grid``, ``tpe``, ``random``, or Optuna's class names)."""

from __future__ import annotations

from typing import Sequence, cast

import optuna

from hpo.config import GridValue, StudyConfig
from hpo.errors import ConfigError
from hpo.search._space import grid_search_space

__all__ = ["SAMPLERS", "WorkerGridSampler", "canonical_sampler", "make_sampler"]

#: Canonical name -> Optuna class name, for messages and ``--sampler``.
SAMPLERS: dict[str, str] = {
    "grid": "GridSampler",
    "tpe": "TPESampler",
    "random": "RandomSampler",
    "qmc": "QMCSampler",
    "cmaes": "CmaEsSampler",
    "nsgaii": "NSGAIISampler",
    "gp": "GPSampler",
}
_ALIASES = {**{k: k for k in SAMPLERS}, **{v.lower(): k for k, v in SAMPLERS.items()}}


class WorkerGridSampler(optuna.samplers.GridSampler):
    """Optuna's GridSampler, for grid points that hpo's workers claim under a study lock.

    Trials carry GridSampler's own ``grid_id`` and ``search_space`` system attributes, so a
    stock GridSampler sees the same coverage. Two differences: the point order is fixed
    (seed 0) so every worker numbers points alike whatever its ``--seed``, and finishing a
    trial does not call ``study.stop()``: the worker loop stops when no point is left.
    """

    def __init__(self, search_space: dict[str, list[GridValue]]) -> None:
        super().__init__(search_space, seed=0)

    @property
    def search_space(self) -> dict[str, list[GridValue]]:
        """The grid, as GridSampler stores it (parameters sorted by name)."""
        # GridSampler's values may be None; an hpo grid holds none (TOML has no null).
        return cast("dict[str, list[GridValue]]", self._search_space)

    def points(self) -> list[dict[str, GridValue]]:
        """Every grid point as parameters, in grid-id order."""
        grids = cast("list[tuple[GridValue, ...]]", self._all_grids)  # as search_space
        return [dict(zip(self._param_names, values)) for values in grids]

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial,
                    state: optuna.trial.TrialState, values: Sequence[float] | None) -> None:
        return None


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
                              "add one, or use $sampler tpe")
        return WorkerGridSampler(grid_search_space(config))
    if not config.space:
        raise ConfigError(f"{config.path}: study {config.name!r} has no [space] table; add "
                          "one, or use $sampler grid")
    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True,
                                          constant_liar=True)
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if kind == "qmc":
        return optuna.samplers.QMCSampler(seed=seed)
    if kind == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if kind == "gp":
        _require_gp_dependencies()
        return optuna.samplers.GPSampler(seed=seed, deterministic_objective=False)
    return optuna.samplers.NSGAIISampler(seed=seed)


def _require_gp_dependencies() -> None:
    """Optuna's GPSampler fits its Gaussian process with PyTorch and SciPy, which hpo does
    not install by default (PyTorch is large)."""
    import importlib.util

    missing = [m for m in ("torch", "scipy") if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(f"$sampler gp needs {' and '.join(missing)}, which is not "
                          "installed; run: pip install 'hpo[gp]' (or pip install torch "
                          "scipy), or use $sampler tpe")
