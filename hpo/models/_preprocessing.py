"""Input preprocessing as layers, so that a saved model takes raw 0..255 pixels."""

from __future__ import annotations

from typing import Any

import keras
from keras import layers, ops

__all__ = ["CaffePreprocessing", "inception_preprocessing"]


@keras.saving.register_keras_serializable(package="hpo")
class CaffePreprocessing(layers.Layer):
    """RGB -> BGR and ImageNet mean subtraction, as keras.applications' 'caffe' mode."""

    def call(self, inputs: Any) -> Any:
        mean = ops.convert_to_tensor([103.939, 116.779, 123.68], dtype=inputs.dtype)
        return ops.flip(inputs, axis=-1) - mean


def inception_preprocessing() -> layers.Layer:
    """Scales 0..255 to -1..1, as keras.applications' 'tf' mode."""
    return layers.Rescaling(scale=1.0 / 127.5, offset=-1.0)
