"""VGG16 with the head of seed 001 (pistols vs smartphones)."""

from __future__ import annotations

import keras

from hpo.models import MODELS
from hpo.models._preprocessing import CaffePreprocessing
from hpo.models._transfer import assemble
from hpo.models._weights import resolve_weights

__all__ = ["build"]


def build(
    *,
    input_shape: tuple[int, int, int],
    num_classes: int,
    weights: str = "imagenet",
    trainable_fraction: float = 1.0,
    dense_units: int = 1024,
    dropout: float = 0.7,
) -> keras.Model:
    """Builds VGG16 -> Flatten -> Dense(dense_units, relu) -> Dropout -> softmax.

    Args:
        input_shape: (height, width, 3); seed 001 uses 128x128.
        num_classes: Output classes.
        weights: ``"imagenet"`` (Keras cache), ``"none"`` or a weights file path.
        trainable_fraction: Share of the backbone that trains (1.0: fine-tune all).
        dense_units: Hidden dense width (1024 in seed 001).
        dropout: Dropout after it (0.7 in seed 001).
    """
    return assemble(
        name="vgg16",
        backbone_fn=keras.applications.VGG16,
        preprocess=CaffePreprocessing(),
        input_shape=input_shape,
        num_classes=num_classes,
        weights_path=resolve_weights("vgg16", weights, MODELS["vgg16"].weights_file),
        pooling=None,
        trainable_fraction=trainable_fraction,
        dense_units=dense_units,
        dropout=dropout,
    )
