"""Shared assembly of a keras.applications backbone with a new softmax head."""

from __future__ import annotations

from typing import Callable

import keras
from keras import layers

from hpo.errors import ModelError

__all__ = ["assemble"]


def assemble(
    *,
    name: str,
    backbone_fn: Callable[..., keras.Model],
    preprocess: layers.Layer,
    input_shape: tuple[int, int, int],
    num_classes: int,
    weights_path: str | None,
    pooling: str | None,
    trainable_fraction: float,
    dense_units: int,
    dropout: float,
) -> keras.Model:
    """Builds ``preprocess -> backbone -> [pool/flatten] -> [Dense] -> [Dropout] -> softmax``.

    Args:
        name: Model name.
        backbone_fn: A keras.applications constructor.
        preprocess: Layer mapping raw 0..255 pixels to what the backbone expects.
        input_shape: (height, width, channels).
        num_classes: Output classes.
        weights_path: A weights file for the headless backbone, or None.
        pooling: ``"avg"`` for global average pooling, None to flatten.
        trainable_fraction: Share of the backbone's layers (counted from the top) that train;
            1.0 trains all (the thesis's final runs), 0.0 freezes the backbone.
        dense_units: Width of an extra hidden dense layer in the head; 0 for none.
        dropout: Dropout before the softmax; 0 for none.
    """
    if not 0.0 <= trainable_fraction <= 1.0:
        raise ModelError(
            f"trainable_fraction must be between 0 and 1, received {trainable_fraction}"
        )
    if input_shape[-1] != 3 and weights_path is not None:
        raise ModelError(
            f"{name} with pretrained weights needs 3-channel images, received "
            f"{input_shape[-1]}; set channels = 3 in the study's [data] section"
        )
    inputs = keras.Input(shape=input_shape)
    backbone = backbone_fn(
        include_top=False, weights=weights_path, input_shape=input_shape, pooling=pooling
    )
    n_frozen = round(len(backbone.layers) * (1.0 - trainable_fraction))
    for layer in backbone.layers[:n_frozen]:
        layer.trainable = False
    x = backbone(preprocess(inputs))
    if pooling is None:
        x = layers.Flatten()(x)
    if dense_units:
        x = layers.Dense(int(dense_units), activation="relu")(x)
    if dropout:
        x = layers.Dropout(float(dropout))(x)
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32")(x)
    return keras.Model(inputs, outputs, name=name)
