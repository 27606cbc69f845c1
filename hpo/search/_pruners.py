"""Pruner names -> Optuna pruners. ``none`` keeps a grid faithful: every run to the end."""

from __future__ import annotations

import optuna

from hpo.config import PRUNERS
from hpo.errors import ConfigError

__all__ = ["make_pruner"]


def make_pruner(name: str, *, max_epochs: int) -> optuna.pruners.BasePruner:
    """Builds pruner ``name``.

    Args:
        name: One of :data:`hpo.config.PRUNERS`.
        max_epochs: The most epochs any trial trains (Hyperband's maximum resource).

    Raises:
        ConfigError: Unknown pruner.
    """
    if name == "none":
        return optuna.pruners.NopPruner()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
    if name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(1, max_epochs),
                                              reduction_factor=3)
    raise ConfigError(f"unknown pruner {name!r}; expected one of {', '.join(PRUNERS)}")
