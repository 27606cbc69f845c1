"""The thesis's per-run figures as PNG files: training curves, confusion matrix, ROC curve."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["confusion_matrix", "roc_curve", "training_curves"]


def _figure(width: float, height: float, **grid: float) -> Any:
    """A figure drawn by Agg straight to a file: no pyplot (no global figure registry, no
    window, safe off the main thread) and a fixed layout (``tight_layout`` measured text
    and cost more than the drawing itself)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    fig.subplots_adjust(**grid)
    return fig


def training_curves(history: dict[str, list[float]], path: Path, title: str,
                    result_epoch: int | None = None) -> Path:
    """Loss and accuracy per epoch, training vs validation, side by side; a dashed line at
    ``result_epoch``, the epoch whose weights the trial's numbers come from."""
    fig = _figure(9, 3.5, left=0.08, right=0.98, bottom=0.14, top=0.86, wspace=0.25)
    axes = fig.subplots(1, 2)
    for ax, metric in zip(axes, ("loss", "accuracy")):
        for key, label in ((metric, "train"), (f"val_{metric}", "validation")):
            if key in history:
                epochs = np.arange(1, len(history[key]) + 1)
                ax.plot(epochs, history[key], marker="o", markersize=3, label=label)
        if result_epoch is not None:
            ax.axvline(result_epoch, color="grey", linestyle="--", linewidth=1,
                       label=f"result (epoch {result_epoch})")
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.savefig(path, dpi=90)
    return path


def confusion_matrix(matrix: Sequence[Sequence[int]], classes: Sequence[str], path: Path,
                     title: str) -> Path:
    """The test set's confusion matrix (rows: true class, columns: predicted)."""
    values = np.asarray(matrix)
    size = max(3.0, 0.6 * len(classes) + 2)
    margin = 1.1 / size  # room for the tick labels, in figure fractions
    fig = _figure(size, size, left=margin, bottom=margin, right=0.97, top=1 - 0.5 / size)
    ax = fig.subplots()
    ax.imshow(values, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    threshold = values.max() / 2 if values.size else 0
    for (i, j), count in np.ndenumerate(values):
        ax.text(j, i, str(count), ha="center", va="center",
                color="white" if count > threshold else "black")
    ax.set_title(title)
    fig.savefig(path, dpi=90)
    return path


def roc_curve(labels: np.ndarray, scores: np.ndarray, auc: float, path: Path,
              title: str) -> Path:
    """ROC curve of a two-class model (positive class: label 1), with its AUC."""
    from sklearn.metrics import roc_curve as sk_roc_curve

    fpr, tpr, _ = sk_roc_curve(labels, scores)
    fig = _figure(4, 4, left=0.16, bottom=0.13, right=0.96, top=0.91)
    ax = fig.subplots()
    ax.plot(fpr, tpr, label=f"AUC = {auc:.4f}")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    ax.legend(loc="lower right")
    fig.savefig(path, dpi=90)
    return path
