"""The short Markdown note optuna-dashboard shows on each finished trial's page.

What a reader of the dashboard wants of a trial at a glance, from what the trial recorded:
its parameters, its value and metric, its test metrics, how many epochs ran and which epoch
its numbers come from, its times, why it failed, and the GPU facts where they were
recorded. The storage writes it with the trial's end (:func:`hpo.storage.set_trial_notes`);
every trial that ends through an hpo storage gets one, COMPLETE, PRUNED or FAIL.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo.storage import set_trial_notes, storage_of
from hpo.study import _attrs as attrs

__all__ = ["trial_note", "keep_trial_notes"]


def _text(value: Any) -> str:
    """A value as a table cell or list item: numbers short, one line, no table breaks."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else str(value)
    text = " ".join(str(value).split())
    return text.replace("|", "\\|")


def _number(value: Any, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if isinstance(value, float) else _text(value)


def trial_note(trial: FrozenTrial, stale: bool = False, *,
               metrics: Sequence[str] = ()) -> str:
    """The note of finished ``trial``; ``metrics`` name its values (default ``value``);
    ``stale``: it was failed because its heartbeat stopped."""
    user = trial.user_attrs
    lines = [f"### Trial {trial.number}: {trial.state.name}"]
    if trial.values:
        names = list(metrics)[:len(trial.values)]
        names += ["value"] * (len(trial.values) - len(names))
        shown = ", ".join(f"**{name}** {_number(v)}" for name, v in zip(names, trial.values))
        if attrs.VALUE_STD in user and attrs.REPEAT_VALUES in user:
            shown += (f" (mean of {len(user[attrs.REPEAT_VALUES])} runs, std "
                      f"{_number(user[attrs.VALUE_STD])})")
        if trial.state == TrialState.PRUNED:
            shown += " (at its last reported epoch)"
        lines += ["", shown]
    if trial.params:
        lines += ["", "| parameter | value |", "| --- | --- |"]
        lines += [f"| {_text(k)} | {_text(v)} |" for k, v in trial.params.items()]
    facts = []
    tests = [f"{label} {_number(user[key])}" for key, label in
             ((attrs.TEST_ACCURACY, "accuracy"), ("roc_auc", "ROC AUC"), ("tp", "TP"),
              ("tn", "TN")) if key in user]
    if tests:
        facts.append("test: " + ", ".join(tests) +
                     (f" ({user['test_size']} images)" if "test_size" in user else ""))
    epochs = []
    if "epochs_trained" in user:
        epochs.append(f"{user['epochs_trained']} run")
    if attrs.RESULT_EPOCH in user:
        policy = user.get(attrs.RESULT_EPOCH_POLICY)
        epochs.append(f"numbers from epoch {user[attrs.RESULT_EPOCH]}" +
                      (f" (policy {policy})" if policy else ""))
    if "best_epoch" in user:
        epochs.append(f"best epoch {user['best_epoch']}")
    if epochs:
        facts.append("epochs: " + ", ".join(epochs))
    times = [f"{label} {_number(user[key], 1)} s" for key, label in
             ((attrs.WALL_TIME, "wall"), ("train_time_s", "fit")) if key in user]
    if times:
        facts.append("time: " + ", ".join(times))
    gpu = []
    if "gpu_busy_pct" in user:
        gpu.append(f"busy {_number(user['gpu_busy_pct'], 1)} %")
    if "gpu_peak_memory_mb" in user:
        gpu.append(f"peak memory {_number(user['gpu_peak_memory_mb'], 1)} MiB")
    devices = (user.get(attrs.WORKER) or {}).get("cuda_visible_devices") \
        if isinstance(user.get(attrs.WORKER), dict) else None
    if gpu or devices:
        facts.append("GPU: " + ", ".join(gpu + ([f"devices {_text(devices)}"] if devices
                                                else [])))
    if "recovered_from_trial" in user:
        facts.append(f"result recovered from trial {user['recovered_from_trial']}, which "
                     "was failed while it still ran")
    if trial.state == TrialState.FAIL:
        reason = user.get(attrs.FAIL_REASON)
        if reason is None:
            reason = ("its heartbeat stopped (its worker was lost); failed by another worker"
                      if stale else "not recorded (its worker was lost)")
        facts.append(f"fail reason: {_text(reason)[:500]}")
    if facts:
        lines += [""] + [f"- {fact}" for fact in facts]
    return "\n".join(lines) + "\n"


def keep_trial_notes(study: optuna.Study, metrics: Sequence[str] | None = None) -> None:
    """Has the storage of ``study`` write a :func:`trial_note` with every trial's end;
    ``metrics`` None keeps a renderer the storage already has (a reaper's: the trials it
    ends have failed, and have no values to name)."""
    render = functools.partial(trial_note, metrics=tuple(metrics or ()))
    set_trial_notes(storage_of(study), render, replace=metrics is not None)
