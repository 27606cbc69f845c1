"""Read-only views of stored studies: trial records, tables, CSV, JSON.

A study file's grid and search live in two linked Optuna studies (:mod:`hpo.study._links`);
these views show one study and name the other (:func:`linked_summary`, :func:`link_lines`),
mark a search trial taken from the grid (its ``imported_from``), and :func:`pair_best` finds
the best trial over both.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Iterable

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo.config import StudyConfig
from hpo.reporting._progress import format_value
from hpo.study import (
    attrs,
    best_by_metric,
    linked_studies,
    metric_maximized,
    metric_value,
    objective_names,
)

__all__ = ["trial_record", "trials_table", "trials_csv", "study_summaries", "study_status",
           "to_json", "linked_summary", "link_lines", "pair_best", "origin"]

_ATTRS = ("test_accuracy", "tp", "tn", "roc_auc", "epochs_trained", "result_epoch",
          "result_epoch_policy", "best_epoch", "n_params",
          "wall_time_s", "outside_fit_s", "compile_s", "steps_reused", "epoch_times_s",
          "images_per_s", "gpu_busy_pct",
          "gpu_peak_memory_mb", "fail_reason")


def trial_record(trial: FrozenTrial) -> dict[str, Any]:
    """A JSON-ready record of one trial: number, state, value, params and key results."""
    record: dict[str, Any] = {
        "number": trial.number,
        "state": trial.state.name,
        "value": metric_value(trial),
        "params": trial.params,
        "datetime_start": trial.datetime_start.isoformat() if trial.datetime_start else None,
        "datetime_complete": (trial.datetime_complete.isoformat()
                              if trial.datetime_complete else None),
    }
    if trial.values is not None and len(trial.values) > 1:
        record["values"] = trial.values
    for key in (*_ATTRS, "confusion_matrix", "classes", "seed", "precision", "worker",
                "value_mean", "value_std", "value_ci95", "value_ci95_method", "repeat_values",
                "repeat_seeds", "repeat_result_epochs", "repeat_test_accuracies", "history",
                attrs.IMPORTED_FROM):
        if key in trial.user_attrs:
            record[key] = trial.user_attrs[key]
    return record


def _param_names(trials: Iterable[FrozenTrial]) -> list[str]:
    names: dict[str, None] = {}
    for trial in trials:
        names.update(dict.fromkeys(trial.params))
    return list(names)


def trials_table(trials: list[FrozenTrial], metric: str,
                 other_objectives: tuple[str, ...] = ()) -> str:
    """A fixed-width table of trials for the terminal.

    Args:
        trials: The trials, one row each.
        metric: Name of the (first) value.
        other_objectives: Names of a multi-objective study's further values, one column each.
    """
    params = _param_names(trials)
    repeated = any("value_std" in t.user_attrs for t in trials)
    gpu = any("gpu_busy_pct" in t.user_attrs for t in trials)
    imported = any(attrs.IMPORTED_FROM in t.user_attrs for t in trials)
    compiled = any("compile_s" in t.user_attrs for t in trials)  # JAX only
    timed = any(t.user_attrs.get("epoch_times_s") for t in trials)
    header = ["#", *(["from"] if imported else []), "state", metric, *other_objectives,
              *(["std", "ci95"] if repeated else []),
              "test_acc", "epoch", *params, "time_s", "outside_fit_s",
              *(["compile_s"] if compiled else []),
              *(["epoch1_s", "epoch_s"] if timed else []), "img/s",
              *(["gpu%", "gpu_mb"] if gpu else [])]
    rows = [header]
    for t in trials:
        test = t.user_attrs.get(attrs.TEST_ACCURACY)
        wall = t.user_attrs.get(attrs.WALL_TIME)
        spread = []
        if repeated:
            std, ci = t.user_attrs.get(attrs.VALUE_STD), t.user_attrs.get("value_ci95")
            spread = ["" if std is None else f"{std:.4f}",
                      "" if ci is None else f"[{ci[0]:.4f}, {ci[1]:.4f}]"]
        rows.append([str(t.number), *([origin(t) or "ran here"] if imported else []),
                     t.state.name,
                     "" if t.values is None else f"{metric_value(t):.4f}",
                     *([f"{v:.4g}" for v in t.values[1:]] if t.values
                       else [""] * len(other_objectives)),
                     *spread,
                     "" if test is None else f"{test:.4f}",
                     _epoch(t.user_attrs),
                     *[format_value(t.params[p]) if p in t.params else "" for p in params],
                     "" if wall is None else f"{wall:.1f}",
                     *[_number(t.user_attrs.get(key), digits) for key, digits in
                       (("outside_fit_s", 2), *((("compile_s", 2),) if compiled else ()))],
                     *(_epoch_times(t.user_attrs.get("epoch_times_s")) if timed else []),
                     *[_number(t.user_attrs.get(key), digits) for key, digits in
                       (("images_per_s", 0),
                        *((("gpu_busy_pct", 0), ("gpu_peak_memory_mb", 0)) if gpu else ()))]])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def _epoch(user_attrs: dict[str, Any]) -> str:
    """The epoch the trial's value and test numbers come from, of those trained, and how it
    was chosen: ``3/10 best``."""
    epoch = user_attrs.get(attrs.RESULT_EPOCH)
    if epoch is None:
        return ""
    trained = user_attrs.get("epochs_trained")
    policy = user_attrs.get(attrs.RESULT_EPOCH_POLICY, "")
    return f"{epoch}/{trained} {policy}" if trained is not None else f"{epoch} {policy}"


def _epoch_times(times: list[float] | None) -> list[str]:
    """The first epoch's seconds and the median of the later ones (the first holds what is
    compiled for the trial)."""
    if not times:
        return ["", ""]
    import statistics

    return [f"{times[0]:.2f}", f"{statistics.median(times[1:]):.2f}" if times[1:] else ""]


def _number(value: Any, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def trials_csv(trials: list[FrozenTrial]) -> str:
    """Trials as CSV, one column per parameter and per key result."""
    params = _param_names(trials)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["number", "state", "value", *params, *_ATTRS])
    for t in trials:
        writer.writerow([t.number, t.state.name, "" if t.values is None else metric_value(t),
                         *[t.params.get(p, "") for p in params],
                         *[t.user_attrs.get(a, "") for a in _ATTRS]])
    return out.getvalue()


def study_summaries(storage: optuna.storages.BaseStorage) -> list[dict[str, Any]]:
    """One record per study in ``storage``: trial counts by state and the best value."""
    result = []
    for summary in storage.get_all_studies():
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        trials = study.get_trials(deepcopy=False)
        counts = {s.name: sum(t.state == s for t in trials) for s in TrialState}
        best_trial = best_by_metric(study)
        best = None if best_trial is None else metric_value(best_trial)
        result.append({"name": summary.study_name,
                       "direction": study.directions[0].name.lower(),
                       "objectives": objective_names(study),
                       "metric": study.user_attrs.get(attrs.METRIC, "value"),
                       "trials": len(trials),
                       "states": {k: v for k, v in counts.items() if v}, "best_value": best,
                       "family": study.user_attrs.get(attrs.FAMILY),
                       "links": dict(study.user_attrs.get(attrs.LINKS) or {})})
    return result


def origin(trial: FrozenTrial) -> str | None:
    """``grid S #3`` for a search trial taken from grid study S's trial 3, else None."""
    source = trial.user_attrs.get(attrs.IMPORTED_FROM)
    if not isinstance(source, dict):
        return None
    return f"grid {source.get('study')} #{source.get('trial')}"


def linked_summary(study: optuna.Study) -> list[dict[str, Any]]:
    """The studies linked to ``study`` (its grid's or its search's): name, family, trials,
    and how many of the search's trials were taken from the grid."""
    result = []
    for other in linked_studies(study):
        trials = other.get_trials(deepcopy=False)
        grid, search = (study, other) if other.user_attrs.get(attrs.FAMILY) == "search" \
            else (other, study)
        taken = sum(1 for t in search.get_trials(deepcopy=False)
                    if (t.user_attrs.get(attrs.IMPORTED_FROM) or {}).get("study")
                    == grid.study_name)
        result.append({"study": other.study_name,
                       "family": other.user_attrs.get(attrs.FAMILY, "?"),
                       "trials": len(trials), "taken_from_grid": taken})
    return result


def link_lines(study: optuna.Study) -> list[str]:
    """One line per study linked to ``study``, for the terminal."""
    lines = []
    for link in linked_summary(study):
        lines.append(f"linked {link['family']} study {link['study']!r}: {link['trials']} "
                     f"trials; {link['taken_from_grid']} grid trial(s) taken by the search as "
                     f"its history (see 'hpo trials {link['study']}')")
    return lines


def pair_best(study: optuna.Study) -> tuple[optuna.Study, FrozenTrial] | None:
    """The best trial by the metric over ``study`` and the studies linked to it (a grid
    trial the search took as history counts once, in the grid), with its study."""
    found = []
    candidates = [study, *linked_studies(study)]
    names = {c.study_name for c in candidates}
    for candidate in candidates:
        trials = [t for t in candidate.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                  if t.values and (t.user_attrs.get(attrs.IMPORTED_FROM) or {}).get("study")
                  not in names]
        if trials:
            pick = max if metric_maximized(candidate) else min
            found.append((candidate, pick(trials, key=lambda t: t.values[0])))
    if not found:
        return None
    # a tie goes to the grid's trial (the first trained), whichever of the pair was asked
    if metric_maximized(study):
        return max(found, key=lambda pair: (pair[1].values[0], _is_grid(pair[0])))
    return min(found, key=lambda pair: (pair[1].values[0], not _is_grid(pair[0])))


def _is_grid(study: optuna.Study) -> bool:
    return bool(study.user_attrs.get(attrs.FAMILY, "grid") == "grid")


def to_json(value: Any) -> str:
    """Pretty JSON for ``--json`` outputs."""
    return json.dumps(value, indent=2, default=str)


def study_status(study: optuna.Study, config: StudyConfig | None,
                 artifacts: Path | None = None) -> dict[str, Any]:
    """Grid coverage, trial counts, workers seen, an ETA and, given the ``--artifacts``
    folder, its disk use, for ``hpo status``."""
    from hpo.study import grid_coverage, grid_key

    trials = study.get_trials(deepcopy=False)
    states = {s.name: sum(t.state == s for t in trials) for s in TrialState}
    workers: dict[str, dict[str, Any]] = {}
    for t in trials:
        worker = t.user_attrs.get(attrs.WORKER)
        if not worker:
            continue
        key = f"{worker.get('host')}/{worker.get('pid')}"
        seen = workers.setdefault(key, {"name": worker.get("name", ""), "trials": 0,
                                        "running": 0, "gpu": worker.get(
                                            "cuda_visible_devices", "")})
        seen["trials"] += 1
        seen["running"] += t.state == TrialState.RUNNING
    durations = [t.user_attrs[attrs.WALL_TIME] for t in trials
                 if t.state == TrialState.COMPLETE and "wall_time_s" in t.user_attrs]
    status: dict[str, Any] = {"study": study.study_name,
                              "states": {k: v for k, v in states.items() if v},
                              # of the FAIL ones: given up or withdrawn before they ran
                              "not_run": sum(t.state == TrialState.FAIL and
                                             attrs.NOT_RUN in t.system_attrs for t in trials),
                              "workers": workers,
                              "mean_trial_s": sum(durations) / len(durations) if durations
                              else None}
    status["linked"] = linked_summary(study)
    if artifacts is not None:
        status["artifacts"] = _artifacts_use(study, artifacts)
    if config is not None and config.grid and \
            study.user_attrs.get(attrs.FAMILY) != "search":  # a search's grid is linked
        coverage = grid_coverage(study, config)
        reasons: dict[tuple[Any, ...], list[str]] = {}
        for t in trials:
            point = grid_key(t.params, config)
            if point is not None and point in coverage.failed and \
                    attrs.NOT_RUN not in t.system_attrs:  # a trial that never ran: no try
                reasons.setdefault(point, []).append(t.user_attrs.get(attrs.FAIL_REASON, "unknown"))
        status["grid"] = {
            "size": coverage.size, "done": len(coverage.done),
            "running": len(coverage.running), "failed": len(coverage.failed),
            "left": coverage.left,
            "failed_points": [{"params": dict(zip(config.grid, key)), "tries": n,
                               "reasons": reasons.get(key, [])}
                              for key, n in coverage.failed.items()],
        }
        active = max(1, states["RUNNING"])
        if status["mean_trial_s"] is not None:
            remaining = coverage.left + len(coverage.running)
            status["eta_s"] = round(remaining * status["mean_trial_s"] / active, 1)
    return status


def _artifacts_use(study: optuna.Study, directory: Path) -> dict[str, Any]:
    """Bytes the artifacts folder takes: all kept models, this study's, and figures."""
    from hpo.trial import disk_usage, models_folder

    folder = models_folder(directory, study)
    study_models = [p.stat().st_size for p in folder.glob("trial-*.keras")] \
        if folder.is_dir() else []
    return {"directory": str(directory), **disk_usage(directory),
            "study_models": len(study_models), "study_models_bytes": sum(study_models)}
