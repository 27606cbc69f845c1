"""What a run prints: one line per trial, per-epoch progress, the best trial at the end."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, TextIO

import optuna
from optuna.trial import FrozenTrial, TrialState

__all__ = ["Reporter", "format_params", "format_value"]


def format_value(value: Any) -> str:
    """Compact text for a parameter value (``0.001``, ``1e-05``, ``Adam``)."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_params(params: dict[str, Any]) -> str:
    """``optimizer=Adam batch_size=32 ...``"""
    return " ".join(f"{k}={format_value(v)}" for k, v in params.items())


@dataclass
class Reporter:
    """Prints progress to a stream; silent when ``quiet`` (only the final summary shows).

    Attributes:
        metric: The study's metric name, shown with each trial's value.
        quiet: Print no per-trial or per-epoch lines.
        epochs: Also print a line per epoch.
        stream: Where to print; standard output by default.
        prefix: Put before every line (the worker's name, with several workers).
    """

    metric: str
    quiet: bool = False
    epochs: bool = True
    stream: TextIO = field(default_factory=lambda: sys.stdout)
    prefix: str = ""

    def _print(self, text: str) -> None:
        print(self.prefix + text, file=self.stream, flush=True)

    def info(self, text: str) -> None:
        """A line of information, hidden when quiet."""
        if not self.quiet:
            self._print(text)

    def summary(self, text: str) -> None:
        """A line printed even when quiet."""
        self._print(text)

    def epoch(self, trial: optuna.Trial, epoch: int, epochs: int, logs: dict[str, float],
              seconds: float) -> None:
        """Called after every epoch of a trial."""
        if self.quiet or not self.epochs:
            return
        shown = " ".join(f"{k}={v:.4f}" for k, v in logs.items()
                         if k in ("loss", "accuracy", "val_loss", "val_accuracy"))
        self._print(f"  trial {trial.number} epoch {epoch}/{epochs} {shown} ({seconds:.1f}s)")

    def trial_done(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Optuna callback: one line per finished trial."""
        if self.quiet:
            return
        seconds = trial.user_attrs.get("wall_time_s")
        took = f" {seconds:.1f}s" if isinstance(seconds, (int, float)) else ""
        if trial.state == TrialState.COMPLETE:
            result = f"{self.metric}={trial.value:.4f}"
            test = trial.user_attrs.get("test_accuracy")
            if test is not None:
                result += f" test_accuracy={test:.4f}"
        elif trial.state == TrialState.FAIL:
            result = f"FAIL ({trial.user_attrs.get('fail_reason', 'see the log above')})"
        else:
            result = trial.state.name
        self._print(f"trial {trial.number:>4}  {result}  {format_params(trial.params)}{took}")
