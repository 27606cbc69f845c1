"""ResNet50 with the head of seed 003 (cats vs dogs)."""

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
    dense_units: int = 0,
    dropout: float = 0.0,
) -> keras.Model:
    """Builds ResNet50 -> Flatten -> softmax, as seed 003.

    Args:
        input_shape: (height, width, 3); seed 003 uses 224x224.
        num_classes: Output classes.
        weights: ``"imagenet"`` (Keras cache), ``"none"`` or a weights file path.
        trainable_fraction: Share of the backbone that trains.
        dense_units: Optional hidden dense layer in the head (0: none, as seed 003).
        dropout: Dropout before the softmax (0: none).
    """
    return assemble(
        name="resnet50",
        backbone_fn=keras.applications.ResNet50,
        preprocess=CaffePreprocessing(),
        input_shape=input_shape,
        num_classes=num_classes,
        weights_path=resolve_weights("resnet50", weights, MODELS["resnet50"].weights_file),
        pooling=None,
        trainable_fraction=trainable_fraction,
        dense_units=dense_units,
        dropout=dropout,
    )
