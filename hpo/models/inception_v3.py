"""InceptionV3 with a new softmax head (seed 000, the thesis's transfer-learning model)."""

from __future__ import annotations

import keras

from hpo.models import MODELS
from hpo.models._preprocessing import inception_preprocessing
from hpo.models._transfer import assemble
from hpo.models._weights import resolve_weights

__all__ = ["build"]


def build(
    *,
    input_shape: tuple[int, int, int],
    num_classes: int,
    weights: str = "imagenet",
    trainable_fraction: float = 1.0,
    dense_units: int = 0,
    dropout: float = 0.0,
) -> keras.Model:
    """Builds InceptionV3; the 1000-class top is replaced by Dense(num_classes, softmax).

    Args:
        input_shape: (height, width, 3); 299x299 is InceptionV3's native size.
        num_classes: Output classes.
        weights: ``"imagenet"`` (Keras cache), ``"none"`` or a weights file path.
        trainable_fraction: Share of the backbone that trains (1.0 in the thesis).
        dense_units: Optional hidden dense layer in the head (0: none, as the thesis).
        dropout: Dropout before the softmax (0: none, as the thesis).
    """
    return assemble(
        name="inception_v3",
        backbone_fn=keras.applications.InceptionV3,
        preprocess=inception_preprocessing(),
        input_shape=input_shape,
        num_classes=num_classes,
        weights_path=resolve_weights("inception_v3", weights, MODELS["inception_v3"].weights_file),
        pooling="avg",
        trainable_fraction=trainable_fraction,
        dense_units=dense_units,
        dropout=dropout,
    )
