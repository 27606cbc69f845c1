"""Data sets that an installed package ships, so that a study runs with no download."""

from __future__ import annotations

import numpy as np

from hpo.config import BUNDLED_DATA
from hpo.errors import DataError

__all__ = ["BUNDLED", "load_bundled"]

BUNDLED = BUNDLED_DATA  # the one list lives with the study-file schema


def _resize_all(images: np.ndarray, size: tuple[int, int], channels: int) -> np.ndarray:
    from PIL import Image

    height, width = size
    out = np.empty((len(images), height, width, channels), dtype=np.uint8)
    for i, image in enumerate(images):
        resized = Image.fromarray(image).resize((width, height),
                                                           Image.Resampling.BILINEAR)
        array = np.asarray(resized, dtype=np.uint8)[..., None]
        out[i] = np.repeat(array, channels, axis=-1) if channels == 3 else array
    return out


def load_bundled(name: str, size: tuple[int, int],
                 channels: int) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Returns (uint8 images, integer labels, class names) of bundled set ``name``.

    ``digits`` is scikit-learn's 1,797 handwritten digits (8x8, 16 grey levels), scaled to
    0..255 and resized to ``size``.

    Raises:
        DataError: ``name`` is not a bundled data set.
    """
    if name != "digits":
        raise DataError(f"unknown bundled data set {name!r}; expected one of "
                        f"{', '.join(BUNDLED)}")
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.clip(digits.images * 16.0, 0, 255).astype(np.uint8)
    classes = tuple(str(c) for c in digits.target_names)
    return _resize_all(images, size, channels), digits.target.astype(np.int64), classes
