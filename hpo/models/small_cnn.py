"""Seed 002's small CIFAR-10 CNN: Conv2D(32, 3x3) -> MaxPool -> Dense(128) -> softmax."""

from __future__ import annotations

import keras
from keras import layers

__all__ = ["build"]


def build(
    *,
    input_shape: tuple[int, int, int],
    num_classes: int,
    conv_blocks: int = 1,
    filters: int = 32,
    dense_units: int = 128,
    dropout: float = 0.0,
    batch_norm: bool = False,
) -> keras.Model:
    """Builds the base model of seed 002, or its deeper variants.

    Args:
        input_shape: (height, width, channels); 32x32x3 for CIFAR-10.
        num_classes: Output classes.
        conv_blocks: Conv-pool blocks; block i has ``filters * 2**i`` filters (1: the base).
        filters: Filters of the first convolution (32 in seed 002).
        dense_units: Hidden dense width (128 in seed 002).
        dropout: Dropout after each block and the dense layer (0: the base model).
        batch_norm: BatchNorm after each convolution (seed 002's last experiment).
    """
    model = keras.Sequential(name="small_cnn")
    model.add(keras.Input(shape=input_shape))
    model.add(layers.Rescaling(1.0 / 255))
    for block in range(int(conv_blocks)):
        model.add(layers.Conv2D(int(filters) * 2**block, 3, activation="relu", padding="same"))
        if batch_norm:
            model.add(layers.BatchNormalization())
        model.add(layers.MaxPooling2D(2))
        if dropout:
            model.add(layers.Dropout(float(dropout)))
    model.add(layers.Flatten())
    model.add(layers.Dense(int(dense_units), activation="relu"))
    if dropout:
        model.add(layers.Dropout(float(dropout)))
    model.add(layers.Dense(num_classes, activation="softmax", dtype="float32"))
    return model
