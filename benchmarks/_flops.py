"""Analytic FLOP counts of Keras CNNs (convolutions and dense layers), for MFU figures."""

from __future__ import annotations

from typing import Iterator

import keras

__all__ = ["training_flops_per_image"]


def _layers(model: keras.Model) -> Iterator[keras.layers.Layer]:
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _layers(layer)
        else:
            yield layer


def training_flops_per_image(model: keras.Model) -> float:
    """Multiply-adds x 2 of every Conv2D and Dense layer, x 3 for forward plus backward."""
    forward = 0
    for layer in _layers(model):
        if isinstance(layer, keras.layers.Conv2D):
            _, height, width, out_channels = layer.output.shape
            in_channels = layer.input.shape[-1]
            kh, kw = layer.kernel_size
            forward += 2 * height * width * out_channels * kh * kw * in_channels
        elif isinstance(layer, keras.layers.Dense):
            forward += 2 * layer.input.shape[-1] * layer.units
    return 3.0 * forward
