"""The thesis's AlexNet variant (seed 000, section 4.3), trained from scratch.

At 227x227x3 and 2 classes, with the thesis's defaults, it has exactly 200,114,946 parameters
(200,112,194 trainable, 2,752 non-trainable), as the thesis reports.
"""

from __future__ import annotations

import keras
from keras import layers

__all__ = ["build"]


def build(
    *,
    input_shape: tuple[int, int, int],
    num_classes: int,
    dense_units: int = 4096,
    dropout: float = 0.0,
) -> keras.Model:
    """Builds the AlexNet variant.

    Args:
        input_shape: (height, width, channels); the thesis uses 227x227x3.
        num_classes: Classes of the softmax output (2 in the thesis).
        dense_units: Width of the two hidden dense layers (4096 in the thesis).
        dropout: Dropout rate after each hidden dense layer (0 in the thesis: no dropout).
    """
    # The layers are listed, then given to Sequential at once: one symbolic build of the
    # model, not one per Sequential.add.
    stack: list[keras.Layer | keras.KerasTensor] = []
    stack.append(keras.Input(shape=input_shape))
    stack.append(layers.Conv2D(96, 11, strides=4, activation="relu"))
    stack.append(layers.BatchNormalization())
    stack.append(layers.MaxPooling2D(pool_size=2, strides=2))
    stack.append(layers.Conv2D(256, 11, strides=1, activation="relu", padding="same"))
    stack.append(layers.BatchNormalization())
    for filters in (384, 384, 256):
        stack.append(layers.Conv2D(filters, 3, activation="relu", padding="same"))
        stack.append(layers.BatchNormalization())
    stack.append(layers.MaxPooling2D(pool_size=2, strides=2))
    stack.append(layers.Flatten())
    for _ in range(2):
        stack.append(layers.Dense(int(dense_units), activation="relu"))
        if dropout > 0:
            stack.append(layers.Dropout(float(dropout)))
    # The output stays float32 under mixed precision, for a numerically stable softmax.
    stack.append(layers.Dense(num_classes, activation="softmax", dtype="float32"))
    return keras.Sequential(stack, name="alexnet")
