"""Where pretrained weights come from: the Keras cache or a file path, never the network."""

from __future__ import annotations

import os
from pathlib import Path

from hpo.errors import ModelError

__all__ = ["resolve_weights"]


def _keras_cache_dir() -> Path:
    """The folder where keras.utils.get_file keeps downloaded weights."""
    base = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(base) / "models"


def resolve_weights(architecture: str, weights: str, notop_file: str) -> str | None:
    """Turns the study's ``weights`` setting into what keras.applications accepts.

    Never downloads: ImageNet weights must be in the Keras cache already, or given as a path.

    Args:
        architecture: Name used in messages.
        weights: ``"none"``, ``"imagenet"`` or a path to a ``.h5`` / ``.weights.h5`` file.
        notop_file: File name Keras caches the headless ImageNet weights under.

    Returns:
        ``None`` (random init) or a path to an existing weights file.

    Raises:
        ModelError: The weights cannot be found.
    """
    if weights in ("none", "", None):
        return None
    if weights == "imagenet":
        cached = _keras_cache_dir() / notop_file
        if cached.is_file():
            return str(cached)
        raise ModelError(
            f"ImageNet weights for {architecture!r} are not in the Keras cache ({cached}) and "
            "hpo never downloads at run time; copy that file there, or set "
            f"weights = '/path/to/{notop_file}' in [architectures.{architecture}], or "
            "weights = 'none' to train from scratch"
        )
    path = Path(weights).expanduser()
    if not path.is_file():
        raise ModelError(
            f"weights file {str(path)!r} for {architecture!r} does not exist; expected a path "
            f"to a Keras weights file such as {notop_file}, 'imagenet' or 'none'"
        )
    return str(path)
