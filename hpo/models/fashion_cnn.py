"""Seed 004's Fashion-MNIST CNN, with the hidden dense layers as a hyperparameter."""

from __future__ import annotations

import keras
from keras import layers

from hpo.errors import ModelError

__all__ = ["build", "parse_hidden_layers"]


def parse_hidden_layers(spec: str | int) -> list[int]:
    """Parses ``"50-50"`` into ``[50, 50]``; seed 004 tried "100", "50-50" and "75-75-75"."""
    try:
        units = [int(part) for part in str(spec).split("-")]
    except ValueError:
        units = []
    if not units or any(u <= 0 for u in units):
        raise ModelError(
            f"hidden_layers must be positive widths joined by '-', such as '50-50', "
            f"received {spec!r}"
        )
    return units


def build(
    *,
    input_shape: tuple[int, int, int],
    num_classes: int,
    hidden_layers: str = "50-50",
    dropout: float = 0.5,
) -> keras.Model:
    """Conv(32)-Pool-Conv(64)-Pool-Dropout-Flatten-Dense(...)-softmax, as seed 004.

    Args:
        input_shape: (height, width, channels); 28x28x1 for Fashion-MNIST.
        num_classes: Output classes.
        hidden_layers: Hidden dense widths, e.g. ``"100"``, ``"50-50"``, ``"75-75-75"``.
        dropout: Dropout after the convolutions (0.5 in seed 004).
    """
    # The layers are listed, then given to Sequential at once: one symbolic build of the
    # model, not one per Sequential.add.
    stack: list[keras.Layer | keras.KerasTensor] = []
    stack.append(keras.Input(shape=input_shape))
    stack.append(layers.Rescaling(1.0 / 255))
    stack.append(layers.Conv2D(32, 3, activation="relu"))
    stack.append(layers.MaxPooling2D(2))
    stack.append(layers.Conv2D(64, 3, activation="relu"))
    stack.append(layers.MaxPooling2D(2))
    if dropout:
        stack.append(layers.Dropout(float(dropout)))
    stack.append(layers.Flatten())
    for units in parse_hidden_layers(hidden_layers):
        stack.append(layers.Dense(units, activation="relu"))
    stack.append(layers.Dense(num_classes, activation="softmax", dtype="float32"))
    return keras.Sequential(stack, name="fashion_cnn")
