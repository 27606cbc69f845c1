"""Optimizer name + learning rate + internals -> a Keras optimizer.

The thesis's eight optimizers, their Keras default learning rates (its baseline), and which
internals (momentum, epsilon, betas, rho) each accepts, so that a study file can tune them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hpo.errors import ConfigError

if TYPE_CHECKING:
    import keras

__all__ = ["OPTIMIZERS", "OPTIMIZER_INTERNALS", "canonical_optimizer", "default_learning_rate",
           "build_optimizer"]

#: Canonical name -> internals it accepts (as Keras 3 keyword arguments).
OPTIMIZERS: dict[str, tuple[str, ...]] = {
    "Adadelta": ("rho", "epsilon"),
    "Adagrad": ("epsilon", "initial_accumulator_value"),
    "Adam": ("beta_1", "beta_2", "epsilon", "amsgrad"),
    "Adamax": ("beta_1", "beta_2", "epsilon"),
    "Ftrl": ("learning_rate_power", "initial_accumulator_value", "l1_regularization_strength",
             "l2_regularization_strength", "beta"),
    "Nadam": ("beta_1", "beta_2", "epsilon"),
    "RMSprop": ("rho", "momentum", "epsilon", "centered"),
    "SGD": ("momentum", "nesterov"),
}

#: Every optimizer internal any optimizer accepts.
OPTIMIZER_INTERNALS: frozenset[str] = frozenset(p for ps in OPTIMIZERS.values() for p in ps)

_BY_LOWER = {name.lower(): name for name in OPTIMIZERS}


def canonical_optimizer(name: str) -> str:
    """Returns the canonical spelling of optimizer ``name`` (case-insensitive).

    Raises:
        ConfigError: ``name`` is not one of the supported optimizers.
    """
    try:
        return _BY_LOWER[str(name).lower()]
    except KeyError:
        raise ConfigError(
            f"unknown optimizer {name!r}; expected one of {', '.join(OPTIMIZERS)}"
        ) from None


def default_learning_rate(name: str) -> float:
    """The Keras default learning rate of ``name``, the thesis's baseline (0.01 for SGD)."""
    return 0.01 if canonical_optimizer(name) == "SGD" else 0.001


def build_optimizer(name: str, learning_rate: float, **internals: Any) -> "keras.Optimizer":
    """Builds Keras optimizer ``name``.

    Args:
        name: One of :data:`OPTIMIZERS`, any case.
        learning_rate: The learning rate.
        **internals: Optimizer-specific keyword arguments (momentum, epsilon, ...).

    Raises:
        ConfigError: Unknown optimizer, or an internal this optimizer does not accept.
    """
    import keras

    canonical = canonical_optimizer(name)
    unknown = sorted(set(internals) - set(OPTIMIZERS[canonical]))
    if unknown:
        raise ConfigError(
            f"optimizer {canonical} does not take {', '.join(unknown)}; it takes "
            f"{', '.join(OPTIMIZERS[canonical])}"
        )
    cls = getattr(keras.optimizers, canonical)
    # a study file may write momentum = 0; Keras's SGD takes only a float
    internals = {k: float(v) if isinstance(v, int) and not isinstance(v, bool) else v
                 for k, v in internals.items()}
    return cls(learning_rate=float(learning_rate), **internals)
