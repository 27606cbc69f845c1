"""What a run prints: one line per trial, per-epoch progress, the best trial at the end."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo.reporting._output import write_or_drop
from hpo.study import attrs, metric_value, objective_names

__all__ = ["Reporter", "format_params", "format_value"]


def format_value(value: Any) -> str:
    """Compact text for a parameter value (``0.001``, ``1e-05``, ``Adam``)."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_params(params: dict[str, Any]) -> str:
    """``optimizer=Adam batch_size=32 ...``"""
    return " ".join(f"{k}={format_value(v)}" for k, v in params.items())


def pareto_front_lines(study: optuna.Study, front: list[FrozenTrial]) -> list[str]:
    """``front`` (:func:`hpo.study.pareto_front`), a heading and one line per trial;
    empty before any trial completes."""
    if not front:
        return []
    names = objective_names(study)
    lines = [f"Pareto front of {', '.join(names)}: {len(front)} trial(s)"]
    for trial in front:
        values = "  ".join(f"{n}={v:.4g}" for n, v in zip(names, trial.values))
        test = trial.user_attrs.get(attrs.TEST_ACCURACY)
        extra = "" if test is None else f"  test_accuracy={test:.4f}"
        lines.append(f"  trial {trial.number:>4}  {values}{extra}  "
                     f"{format_params(trial.params)}")
    return lines


@dataclass
class Reporter:
    """Prints progress to a stream; silent when ``quiet`` (only the final summary shows).

    A stream that cannot be written (``hpo run | head``, a hung-up terminal) is dropped with
    one warning on standard error; the run goes on (:mod:`hpo.reporting._output`).

    Attributes:
        metric: The study's metric name, shown with each trial's value.
        quiet: Print no per-trial or per-epoch lines.
        epochs: Also print a line per epoch.
        stream: Where to print; standard output by default.
        prefix: Put before every line (the worker's name, with several workers).
        json_lines: Print one JSON object per event instead of text (``--log-json``).
    """

    metric: str
    quiet: bool = False
    epochs: bool = True
    stream: TextIO = field(default_factory=lambda: sys.stdout)
    prefix: str = ""
    json_lines: bool = False
    _live: bool = field(default=False, init=False, repr=False)  # an unended progress line

    def _print(self, text: str) -> None:
        if self._live:
            text = "\n" + self.prefix + text
            self._live = False
        else:
            text = self.prefix + text
        write_or_drop(self.stream, text + "\n")

    def __post_init__(self) -> None:
        # A terminal gets one self-updating progress line per trial; logs get plain lines.
        try:
            tty = bool(getattr(self.stream, "isatty", lambda: False)())
        except ValueError:  # a closed stream
            tty = False
        self._tty = tty and not self.json_lines
        self._live = False

    def _event(self, event: str, **fields: Any) -> None:
        write_or_drop(self.stream, json.dumps(
            {"event": event, "time": round(time.time(), 3), **fields}, default=str) + "\n")

    def info(self, text: str) -> None:
        """A line of information, hidden when quiet."""
        if self.json_lines:
            self._event("info", message=text)
        elif not self.quiet:
            self._print(text)

    def summary(self, text: str) -> None:
        """A line printed even when quiet."""
        if self.json_lines:
            self._event("summary", message=text)
        else:
            self._print(text)

    def epoch(self, trial: optuna.Trial, epoch: int, epochs: int, logs: dict[str, float],
              seconds: float) -> None:
        """Called after every epoch of a trial."""
        if self.json_lines:
            self._event("epoch", trial=trial.number, epoch=epoch, epochs=epochs,
                        seconds=round(seconds, 3), **logs)
            return
        if self.quiet or not self.epochs:
            return
        shown = " ".join(f"{k}={v:.4f}" for k, v in logs.items()
                         if k in ("loss", "accuracy", "val_loss", "val_accuracy"))
        if self._tty:
            done = int(20 * epoch / max(1, epochs))
            bar = "#" * done + "." * (20 - done)
            self._live = write_or_drop(self.stream, f"\r\x1b[K{self.prefix}  trial "
                                                    f"{trial.number} [{bar}] {epoch}/{epochs} "
                                                    f"{shown}")
            return
        self._print(f"  trial {trial.number} epoch {epoch}/{epochs} {shown} ({seconds:.1f}s)")

    def trial_done(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """One line per finished trial."""
        if self.json_lines:
            self._event("trial", number=trial.number, state=trial.state.name,
                        value=metric_value(trial), values=trial.values, params=trial.params,
                        **{k: trial.user_attrs[k] for k in ("test_accuracy", "wall_time_s",
                                                             "fail_reason")
                           if k in trial.user_attrs})
            return
        if self.quiet:
            return
        seconds = trial.user_attrs.get(attrs.WALL_TIME)
        took = f" {seconds:.1f}s" if isinstance(seconds, (int, float)) else ""
        if trial.state == TrialState.COMPLETE:
            result = f"{self.metric}={metric_value(trial):.4f}"
            if trial.values is not None and len(trial.values) > 1:
                result += "".join(f" {n}={v:.4g}" for n, v in
                                  zip(objective_names(study)[1:], trial.values[1:]))
            test = trial.user_attrs.get(attrs.TEST_ACCURACY)
            if test is not None:
                result += f" test_accuracy={test:.4f}"
        elif trial.state == TrialState.FAIL:
            result = f"FAIL ({trial.user_attrs.get('fail_reason', 'see the log above')})"
        else:
            result = trial.state.name
        self._print(f"trial {trial.number:>4}  {result}  {format_params(trial.params)}{took}")
