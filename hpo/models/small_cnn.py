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
    # The layers are listed, then given to Sequential at once: one symbolic build of the
    # model, not one per Sequential.add.
    stack: list[keras.Layer | keras.KerasTensor] = []
    stack.append(keras.Input(shape=input_shape))
    stack.append(layers.Rescaling(1.0 / 255))
    for block in range(int(conv_blocks)):
        stack.append(layers.Conv2D(int(filters) * 2**block, 3, activation="relu", padding="same"))
        if batch_norm:
            stack.append(layers.BatchNormalization())
        stack.append(layers.MaxPooling2D(2))
        if dropout:
            stack.append(layers.Dropout(float(dropout)))
    stack.append(layers.Flatten())
    stack.append(layers.Dense(int(dense_units), activation="relu"))
    if dropout:
        stack.append(layers.Dropout(float(dropout)))
    stack.append(layers.Dense(num_classes, activation="softmax", dtype="float32"))
    return keras.Sequential(stack, name="small_cnn")
