"""The thesis's tables, regenerated from a stored study: Markdown, CSV, LaTeX or HTML.

* Table 1: per architecture, each optimizer at the Keras defaults the thesis used as its
  baseline (batch 32, learning rate 0.001, 0.01 for SGD), at the most epochs run;
* Table 2: per architecture, each optimizer's best configuration (by the study's validation
  metric), with the change in test accuracy against its Table 1 row;
* the best trial overall with its confusion matrix and ROC AUC;
* hyperparameter importances (Optuna's fANOVA and PED-ANOVA evaluators).
"""

from __future__ import annotations

import base64
import csv
import html
import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo.errors import ConfigError, OutputError, writing
from hpo.optimizers import default_learning_rate
from hpo.study import attrs, best_by_metric, metric_maximized, metric_value

__all__ = ["FORMATS", "Report", "build_report", "write_report"]

FORMATS = ("md", "csv", "latex", "html")
_TABLE_COLUMNS = ("architecture", "optimizer", "batch_size", "learning_rate", "epochs", "tp",
                  "tn", "test_accuracy")


@dataclass
class Report:
    """A study's tables, ready to render.

    Attributes:
        study: Study name.
        metric: The metric the search optimised.
        defaults: Table 1 rows.
        best_per_optimizer: Table 2 rows (with ``change`` in percentage points).
        best: The best trial overall.
        importances: Evaluator name -> parameter -> importance.
        notes: Why a part is missing (too few trials, ...).
    """

    study: str
    metric: str
    defaults: list[dict[str, Any]] = field(default_factory=list)
    best_per_optimizer: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None
    importances: dict[str, dict[str, float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _value(trial: FrozenTrial, name: str, training: Mapping[str, Any]) -> Any:
    return trial.params.get(name, training.get(name))


def _row(trial: FrozenTrial, training: Mapping[str, Any]) -> dict[str, Any]:
    row = {name: _value(trial, name, training) for name in _TABLE_COLUMNS[:5]}
    row.update(trial=trial.number, value=metric_value(trial),
               tp=trial.user_attrs.get("tp"), tn=trial.user_attrs.get("tn"),
               test_accuracy=trial.user_attrs.get(attrs.TEST_ACCURACY))
    if "value_std" in trial.user_attrs:  # repeated with several seeds
        row.update(std=trial.user_attrs[attrs.VALUE_STD], ci95=trial.user_attrs["value_ci95"],
                   runs=len(trial.user_attrs.get(attrs.REPEAT_VALUES, [])))
    return row


def _spread(row: dict[str, Any]) -> str:
    """``0.9123 (std 0.0100) [0.8875, 0.9371] (5 runs)`` for a repeated configuration: no
    ``mean +- std``, which reads as a range and can pass a bound (0.99 +- 0.02 > 1)."""
    if "std" not in row:
        return ""
    low, high = row["ci95"]
    return (f"{row['value']:.4f} (std {row['std']:.4f}) [{low:.4f}, {high:.4f}] "
            f"({row['runs']} runs)")


def build_report(study: optuna.Study, training: Mapping[str, Any] | None = None) -> Report:
    """Builds the report of ``study``.

    Args:
        study: A study run by hpo (or any study with these parameter names).
        training: The study file's training defaults, for parameters a trial did not sample
            (default: those hpo stored with the study).
    """
    training = training or study.user_attrs.get(attrs.TRAINING, {})
    report = Report(study=study.study_name, metric=study.user_attrs.get(attrs.METRIC, "value"))
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        report.notes.append("no completed trial yet")
        return report
    pick = max if metric_maximized(study) else min
    groups: dict[tuple[str, str], list[FrozenTrial]] = {}
    for trial in complete:
        key = (str(_value(trial, "architecture", training)),
               str(_value(trial, "optimizer", training)))
        groups.setdefault(key, []).append(trial)
    for (architecture, optimizer), trials in sorted(groups.items()):
        baseline = [t for t in trials
                    if _value(t, "batch_size", training) == 32
                    and _value(t, "learning_rate", training) == default_learning_rate(optimizer)]
        default_row = None
        if baseline:
            most = max(int(_value(t, "epochs", training) or 0) for t in baseline)
            chosen = [t for t in baseline if int(_value(t, "epochs", training) or 0) == most]
            default_row = _row(max(chosen, key=lambda t: t.number), training)
            report.defaults.append(default_row)
        best_row = _row(pick(trials, key=lambda t: t.values[0]), training)  # the metric
        if default_row and default_row["test_accuracy"] is not None \
                and best_row["test_accuracy"] is not None:
            best_row["change"] = 100 * (best_row["test_accuracy"] - default_row["test_accuracy"])
        report.best_per_optimizer.append(best_row)
    if not report.defaults:
        report.notes.append("no trial ran an optimizer at the Keras defaults (batch 32, "
                            "lr 0.001; 0.01 for SGD): Table 1 is empty")
    best = best_by_metric(study)
    assert best is not None  # there are completed trials
    report.best = {**_row(best, training), "params": best.params,
                   "confusion_matrix": best.user_attrs.get("confusion_matrix"),
                   "roc_auc": best.user_attrs.get("roc_auc"),
                   "classes": best.user_attrs.get("classes"),
                   "result_epoch": best.user_attrs.get(attrs.RESULT_EPOCH),
                   "result_epoch_policy": best.user_attrs.get(attrs.RESULT_EPOCH_POLICY)}
    _add_importances(study, report)
    return report


def _add_importances(study: optuna.Study, report: Report) -> None:
    evaluators = {
        "fanova": optuna.importance.FanovaImportanceEvaluator(seed=0),
        "ped_anova": optuna.importance.PedAnovaImportanceEvaluator(),
    }
    for name, evaluator in evaluators.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                importances = optuna.importance.get_param_importances(
                    study, evaluator=evaluator,
                    # a multi-objective study: importances for the metric (its first value)
                    target=(lambda t: t.values[0]) if len(study.directions) > 1 else None)
        except (ValueError, RuntimeError) as exc:
            report.notes.append(f"{name} importances unavailable: {exc}")
            continue
        report.importances[name] = {k: float(v) for k, v in importances.items()}


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _accuracy(value: Any) -> str:
    return "" if value is None else f"{100 * value:.2f} %"


def _tables(report: Report) -> list[tuple[str, list[str], list[list[str]]]]:
    head = ["CNN", "optimizer", "batch", "lr", "epochs", "TP", "TN", "test accuracy", "trial"]
    table1 = [[_fmt(r["architecture"]), _fmt(r["optimizer"]), _fmt(r["batch_size"]),
               _fmt(r["learning_rate"]), _fmt(r["epochs"]), _fmt(r["tp"]), _fmt(r["tn"]),
               _accuracy(r["test_accuracy"]), str(r["trial"])] for r in report.defaults]
    table2 = [[_fmt(r["architecture"]), _fmt(r["optimizer"]), _fmt(r["batch_size"]),
               _fmt(r["learning_rate"]), _fmt(r["epochs"]), _fmt(r["tp"]), _fmt(r["tn"]),
               _accuracy(r["test_accuracy"]),
               "" if "change" not in r else f"{r['change']:+.2f}", str(r["trial"])]
              for r in report.best_per_optimizer]
    if any("std" in r for r in report.best_per_optimizer):
        head2 = head[:-1] + ["change (points)", "val mean (std) [95% bootstrap CI]", "trial"]
        table2 = [row[:-1] + [_spread(r), row[-1]]
                  for row, r in zip(table2, report.best_per_optimizer)]
    else:
        head2 = head[:-1] + ["change (points)", "trial"]
    importance_rows = [[name, evaluator, f"{value:.3f}"]
                       for evaluator, values in report.importances.items()
                       for name, value in values.items()]
    return [
        ("Table 1: optimizers at the Keras defaults", head, table1),
        ("Table 2: best configuration per optimizer, change in test accuracy vs Table 1",
         head2, table2),
        ("Hyperparameter importances", ["parameter", "evaluator", "importance"],
         importance_rows),
    ]


def _epoch_text(best: dict[str, Any]) -> str:
    """Which epoch the best trial's numbers come from (nothing for a trial stored by an hpo
    that did not record it)."""
    if best.get("result_epoch") is None:
        return ""
    epoch = f"epoch {best['result_epoch']}, the {best['result_epoch_policy']} epoch"
    if "runs" in best:  # repeated: the value and test accuracy are means over the runs
        return (f"; means over {best['runs']} runs, each at its {best['result_epoch_policy']}"
                f" epoch; ROC AUC and confusion matrix: the first run's, at its {epoch}")
    return f"; all at {epoch}"


def _best_text(report: Report) -> list[str]:
    if report.best is None:
        return []
    b = report.best
    lines = [f"Best trial: {b['trial']} ({report.metric} = {b['value']:.4f}, test accuracy "
             f"{_accuracy(b['test_accuracy'])}"
             + (f", ROC AUC {b['roc_auc']:.4f}" if b.get("roc_auc") is not None else "")
             + _epoch_text(b) + ")",
             "Parameters: " + ", ".join(f"{k}={_fmt(v)}" for k, v in b["params"].items())]
    if b.get("confusion_matrix"):
        lines.append(f"Confusion matrix (rows: true {b.get('classes')}): "
                     f"{b['confusion_matrix']}")
    return lines


def _markdown(report: Report) -> str:
    out = [f"# Study {report.study}", ""]
    for title, head, rows in _tables(report):
        out += [f"## {title}", "", "| " + " | ".join(head) + " |",
                "|" + "---|" * len(head)]
        out += ["| " + " | ".join(row) + " |" for row in rows] + [""]
    out += ["## Best trial", ""] + [f"- {line}" for line in _best_text(report)]
    out += [""] + [f"> {note}" for note in report.notes]
    return "\n".join(out) + "\n"


def _csv(report: Report) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["table", *_TABLE_COLUMNS, "change", "trial"])
    for name, rows in (("defaults", report.defaults),
                       ("best_per_optimizer", report.best_per_optimizer)):
        for r in rows:
            writer.writerow([name, *[r.get(c, "") for c in _TABLE_COLUMNS],
                             r.get("change", ""), r["trial"]])
    return buffer.getvalue()


def _latex_escape(text: str) -> str:
    for char in ("\\", "&", "%", "$", "#", "_", "{", "}"):
        text = text.replace(char, "\\" + char if char != "\\" else r"\textbackslash{}")
    return text


def _latex(report: Report) -> str:
    out = []
    for title, head, rows in _tables(report):
        out += [r"\begin{table}[ht]", r"\centering", f"\\caption{{{_latex_escape(title)}}}",
                r"\begin{tabular}{" + "l" * len(head) + "}", r"\hline",
                " & ".join(_latex_escape(h) for h in head) + r" \\", r"\hline"]
        out += [" & ".join(_latex_escape(c) for c in row) + r" \\" for row in rows]
        out += [r"\hline", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(out)


def _importance_png(report: Report) -> str | None:
    values = report.importances.get("fanova") or next(iter(report.importances.values()), None)
    if not values:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 0.4 * len(values) + 1))
    names = list(values)[::-1]
    ax.barh(names, [values[n] for n in names])
    ax.set_xlabel("importance")
    ax.set_title("hyperparameter importance")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def _html(report: Report) -> str:
    out = ["<!doctype html><html><head><meta charset='utf-8'>",
           f"<title>hpo report: {html.escape(report.study)}</title>",
           "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
           "td,th{border:1px solid #ccc;padding:4px 8px}</style></head><body>",
           f"<h1>Study {html.escape(report.study)}</h1>"]
    for title, head, rows in _tables(report):
        out.append(f"<h2>{html.escape(title)}</h2><table><tr>"
                   + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>")
        out += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                for row in rows]
        out.append("</table>")
    image = _importance_png(report)
    if image:
        out.append(f"<img alt='hyperparameter importance' src='data:image/png;base64,{image}'>")
    out.append("<h2>Best trial</h2><ul>"
               + "".join(f"<li>{html.escape(line)}</li>" for line in _best_text(report))
               + "</ul>")
    out += [f"<p><em>{html.escape(note)}</em></p>" for note in report.notes]
    out.append("</body></html>")
    return "\n".join(out)


def write_report(report: Report, fmt: str, out: Path | None) -> str:
    """Renders ``report`` as ``fmt``; writes ``out/report.EXT`` when ``out`` is given.

    Returns:
        The rendered text.

    Raises:
        ConfigError: Unknown format.
        OutputError: ``out`` cannot be written.
    """
    renderers = {"md": (_markdown, "md"), "csv": (_csv, "csv"), "latex": (_latex, "tex"),
                 "html": (_html, "html")}
    if fmt not in renderers:
        raise ConfigError(f"unknown report format {fmt!r}; expected one of "
                          f"{', '.join(FORMATS)}")
    render, extension = renderers[fmt]
    text = render(report)
    if out is not None:
        with writing(out, "the report"):  # a name too long, say
            is_file = out.exists() and not out.is_dir()
        if is_file:
            raise OutputError(f"$out {str(out)!r} is a file; expected a folder, which "
                              f"report.{extension} is written into")
        with writing(out / f"report.{extension}", "the report"):
            out.mkdir(parents=True, exist_ok=True)
            (out / f"report.{extension}").write_text(text, encoding="utf-8")
    return text
