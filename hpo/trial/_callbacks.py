"""Keras callbacks of a trial: NaN guard, a stop that library code swallowed, per-epoch
progress and history, the result epoch, pruning."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import optuna

__all__ = ["EpochRecorder", "NanGuard", "NonFiniteLossError", "ResultEpoch", "StopCheck",
           "pruning_callback"]


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


class StopCheck(keras.callbacks.Callback):
    """Calls ``check`` after every training and validation batch and every epoch: it raises
    a stop (SIGTERM, Ctrl-C) that the signal handler raised and library code swallowed
    (TensorFlow tracing a step), so the trial ends at the next batch, FAIL "stopped", rather
    than training to its last epoch with the worker deaf to the signal (under Slurm, until
    the SIGKILL that leaves it RUNNING)."""

    def __init__(self, check: Callable[[], None]) -> None:
        super().__init__()
        self._check = check

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self._check()

    def on_test_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self._check()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._check()


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
        #: Wall seconds of each epoch ended (its steps and its validation).
        self.epoch_times: list[float] = []
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
        seconds = time.perf_counter() - self._start
        self.epoch_times.append(seconds)
        values = {k: float(v) for k, v in (logs or {}).items()}
        for key, value in values.items():
            self.history.setdefault(key, []).append(value)
        if self._report is not None:
            self._report(epoch + 1, self._epochs, values, seconds)


class ResultEpoch(keras.callbacks.Callback):
    """Follows which epoch a trial's numbers come from, as the epochs end.

    With ``policy="final"`` that is the last epoch trained; with ``policy="best"`` the first
    epoch with the best finite ``metric`` (by ``direction``), whose weights (all of them,
    batch-norm statistics included) are copied when it ends, for :meth:`restore`.

    Args:
        metric: The validation metric (``val_accuracy``, ``val_loss``).
        maximize: Whether a larger metric is better.
        policy: ``final`` or ``best``.
    """

    def __init__(self, metric: str, *, maximize: bool, policy: str) -> None:
        super().__init__()
        if policy not in ("final", "best"):
            raise ValueError(f"result epoch policy must be 'final' or 'best', not {policy!r}")
        self.metric = metric
        self.policy = policy
        self._maximize = maximize
        self._last: tuple[int, float] | None = None  # (epoch from 1, metric)
        self._best: tuple[int, float] | None = None
        self._weights: list[Any] | None = None
        self._weights_epoch: int | None = None

    @property
    def best_epoch(self) -> int | None:
        """The first epoch (from 1) with the best finite metric so far, or None."""
        return None if self._best is None else self._best[0]

    @property
    def epoch(self) -> int | None:
        """The epoch (from 1) the numbers come from, as of the last epoch ended; None
        before the first epoch with a finite metric."""
        chosen = self._best if self.policy == "best" else self._last
        return None if chosen is None else chosen[0]

    @property
    def value(self) -> float | None:
        """The metric at :attr:`epoch` (what the trial would be worth if it ended now)."""
        chosen = self._best if self.policy == "best" else self._last
        return None if chosen is None else chosen[1]

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        raw = (logs or {}).get(self.metric)
        value = float(raw) if raw is not None else math.nan
        self._last = (epoch + 1, value) if math.isfinite(value) else None
        if not math.isfinite(value):
            return
        if self._best is None or (value > self._best[1] if self._maximize
                                  else value < self._best[1]):
            self._best = (epoch + 1, value)
            if self.policy == "best":
                self._weights = [np.array(w, copy=True) for w in self.model.get_weights()]
                self._weights_epoch = epoch + 1

    def restore(self, epochs_trained: int) -> None:
        """Gives the model the result epoch's weights: with ``best``, those copied at the
        best epoch unless it was the last one trained (the model holds them already)."""
        if self.policy != "best" or self._weights is None or \
                self._weights_epoch == epochs_trained:
            return
        self.model.set_weights(self._weights)
        self._weights = None


class _PruningCallback(keras.callbacks.Callback):
    """Reports, after each epoch, what the trial would be worth if it ended there (the
    :class:`ResultEpoch`'s value, under the study's policy) and prunes when told.

    As Optuna's ``KerasPruningCallback`` (step: the epoch from 0), except that a trial
    failed by another worker keeps training: when a live trial is wrongly judged stale (a
    late heartbeat) and marked FAIL, Optuna's ``report`` raises; the run then goes on
    unreported, so that its result can be kept. A pruned trial's value (Optuna takes its
    last report) is thereby its result epoch's metric, under either policy.
    """

    def __init__(self, trial: optuna.Trial, result: ResultEpoch) -> None:
        super().__init__()
        self._trial = trial
        self._result = result

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        value = self._result.value
        if value is None:  # no finite metric yet: nothing to report
            return
        try:
            self._trial.report(float(value), step=epoch)
        except optuna.exceptions.UpdateFinishedTrialError:
            return
        if self._trial.should_prune():
            raise optuna.TrialPruned(f"Trial was pruned at epoch {epoch}.")


def pruning_callback(trial: optuna.Trial, result: ResultEpoch) -> keras.callbacks.Callback:
    """Reports ``result``'s value each epoch to the pruner, prunes when told; list it after
    ``result`` among the callbacks."""
    return _PruningCallback(trial, result)
