"""The thesis's baseline: every optimizer at its Keras defaults (batch 32, lr 0.001; SGD 0.01)."""

from __future__ import annotations

import logging
from typing import Any

import optuna

from hpo.config import StudyConfig
from hpo.optimizers import default_learning_rate

__all__ = ["default_configurations", "enqueue_defaults", "is_default"]

_log = logging.getLogger(__name__)


def _optimizers(config: StudyConfig, *, grid: bool) -> list[str]:
    if grid and "optimizer" in config.grid:
        return [str(o) for o in config.grid["optimizer"]]
    for spec in config.space:
        if spec.name == "optimizer" and spec.choices is not None and not grid:
            return [str(o) for o in spec.choices]
    return [str(config.training["optimizer"])]


def default_configurations(config: StudyConfig, *, grid: bool) -> list[dict[str, Any]]:
    """One parameter set per optimizer of the study at the Keras defaults.

    Only parameters the grid (or the space) samples are fixed; a default outside the space
    (e.g. batch 32 where the space has no 32) is left to the sampler.
    """
    result = []
    for optimizer in _optimizers(config, grid=grid):
        wanted = {"optimizer": optimizer, "learning_rate": default_learning_rate(optimizer),
                  "batch_size": 32}
        params: dict[str, Any] = {}
        for name, value in wanted.items():
            if grid:
                if name in config.grid and value in config.grid[name]:
                    params[name] = value
                continue
            spec = next((s for s in config.space if s.name == name), None)
            if spec is None:
                continue
            if spec.choices is not None:
                inside = value in spec.choices
            else:
                low, high = spec.bounds
                inside = isinstance(value, (int, float)) and low <= value <= high
            if inside:
                params[name] = value
        if params:
            result.append(params)
    return result


def is_default(params: dict[str, Any]) -> bool:
    """Whether ``params`` are an optimizer at its Keras defaults (batch 32 where given)."""
    optimizer = params.get("optimizer")
    return optimizer is not None and \
        params.get("learning_rate") == default_learning_rate(str(optimizer)) and \
        params.get("batch_size", 32) == 32


def enqueue_defaults(study: optuna.Study, config: StudyConfig) -> int:
    """Queues the defaults (not twice) so a sampler such as TPE starts from the baseline.

    Returns:
        How many parameter sets were queued.
    """
    queued = 0
    for params in default_configurations(config, grid=False):
        before = len(study.get_trials(deepcopy=False))
        study.enqueue_trial(params, skip_if_exists=True)
        queued += len(study.get_trials(deepcopy=False)) > before
    if queued:
        _log.info("queued %d baseline configuration(s) at the Keras defaults", queued)
    return queued
