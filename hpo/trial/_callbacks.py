"""Keras callbacks of a trial: NaN guard, per-epoch progress and history, pruning."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import keras
import optuna
from optuna_integration import KerasPruningCallback

__all__ = ["EpochRecorder", "NanGuard", "NonFiniteLossError", "pruning_callback"]


class NonFiniteLossError(ArithmeticError):
    """The training loss became NaN or infinite: the trial fails with this reason."""


class NanGuard(keras.callbacks.Callback):
    """Stops a trial whose loss is no longer finite, so no epoch is wasted on a diverged run."""

    def __init__(self) -> None:
        super().__init__()
        self._epoch = 0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise NonFiniteLossError(
                f"loss became {float(loss)} at epoch {self._epoch + 1}, batch {batch + 1}"
            )


class EpochRecorder(keras.callbacks.Callback):
    """Keeps the per-epoch history (also of a pruned or failed run) and reports each epoch.

    Args:
        report: Called after each epoch with (epoch number from 1, epochs, logs, seconds).
        epochs: Planned epochs, for the progress text.
    """

    def __init__(self, report: Callable[[int, int, dict[str, float], float], None] | None,
                 epochs: int) -> None:
        super().__init__()
        self.history: dict[str, list[float]] = {}
        self._report = report
        self._epochs = epochs
        self._start = 0.0
        self.first_step_at: float | None = None

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._start = time.perf_counter()

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if self.first_step_at is None:
            self.first_step_at = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        values = {k: float(v) for k, v in (logs or {}).items()}
        for key, value in values.items():
            self.history.setdefault(key, []).append(value)
        if self._report is not None:
            self._report(epoch + 1, self._epochs, values, time.perf_counter() - self._start)


class _PruningCallback(KerasPruningCallback):
    """Optuna's callback, except that a trial failed by another worker keeps training.

    When a live trial is wrongly judged stale (a late heartbeat) and marked FAIL, Optuna's
    ``report`` raises; the run then goes on unreported, so that its result can be kept.
    """

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        try:
            super().on_epoch_end(epoch, logs)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass


def pruning_callback(trial: optuna.Trial, metric: str) -> keras.callbacks.Callback:
    """Optuna's Keras pruning callback: reports ``metric`` each epoch, prunes when told."""
    return _PruningCallback(trial, metric)
