"""Batches from memory-mapped uint8 arrays, for ``model.fit`` on any Keras backend."""

from __future__ import annotations

import math

import keras
import numpy as np

__all__ = ["ArrayBatches"]


class ArrayBatches(keras.utils.PyDataset):
    """Feeds (images, int labels) batches from a uint8 array, reshuffled per epoch.

    The array is usually a memory map of the decode-once cache: only the rows of a batch are
    read, and every process on a host shares the same pages of the page cache. Images stay
    uint8 by default: the model casts them to its compute dtype on the device, so the host
    copies and transfers a quarter of the bytes (BENCHMARKS.md measures the difference).

    Args:
        x: (N, H, W, C) uint8 images.
        y: (N,) integer labels.
        batch_size: Rows per batch (the last batch may be smaller).
        shuffle: Reshuffle the order at the start of every epoch.
        seed: Seed of the shuffling.
        workers: Threads preparing batches ahead of the training step.
        dtype: dtype of the image batches handed to Keras.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, *, batch_size: int, shuffle: bool,
                 seed: int = 0, workers: int = 2, dtype: type = np.uint8) -> None:
        super().__init__(workers=workers, use_multiprocessing=False,
                         max_queue_size=max(2, 2 * workers))
        if len(x) != len(y):
            raise ValueError(f"x has {len(x)} rows but y has {len(y)}")
        self._x = x
        self._y = y
        self._batch_size = int(batch_size)
        self._shuffle = shuffle
        self._dtype = dtype
        self._rng = np.random.default_rng(seed)
        self._order = np.arange(len(y))
        if shuffle:
            self._rng.shuffle(self._order)

    def __len__(self) -> int:
        return math.ceil(len(self._y) / self._batch_size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        rows = self._order[index * self._batch_size:(index + 1) * self._batch_size]
        if self._shuffle:
            # Sorted reads are sequential in the memory map; the batch's order is irrelevant.
            rows = np.sort(rows)
        return self._x[rows].astype(self._dtype, copy=False), self._y[rows]

    def on_epoch_end(self) -> None:
        if self._shuffle:
            self._rng.shuffle(self._order)
