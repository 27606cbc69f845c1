"""What a trial leaves behind: PNG figures as Optuna artifacts, and the best trained models.

Figures (training curves, confusion matrix, ROC curve) are uploaded to an Optuna
``FileSystemArtifactStore``, so optuna-dashboard shows them on each trial's page. Trained
models (``.keras``) are kept for the ``keep_models`` best trials only, in
``DIR/models/STUDY/trial-NNNNN.keras``; a model that falls out of the top is deleted, so
the disk does not fill over a 384-run grid.
"""

from __future__ import annotations

import logging
import re
import tempfile
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
from optuna.trial import TrialState

from hpo.study import best_by_metric, metric_maximized, metric_value
from hpo.trial import _plots as plots

if TYPE_CHECKING:
    import keras

__all__ = ["Artifacts", "model_path", "artifact_store", "export_model"]

_log = logging.getLogger("hpo.artifacts")


def artifact_store(directory: Path) -> optuna.artifacts.FileSystemArtifactStore:
    """The Optuna artifact store in ``directory`` (created if missing)."""
    directory.mkdir(parents=True, exist_ok=True)
    return optuna.artifacts.FileSystemArtifactStore(str(directory))


def _folder_name(study_name: str) -> str:
    """A folder name for ``study_name`` that stays inside its parent, one per name: plain
    names as they are; anything else (``../x``, ``a/b``, ``..``) percent-encoded, so that a
    study name can never place files outside ``--artifacts``."""
    if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", study_name):
        return study_name
    encoded = urllib.parse.quote(study_name, safe="")
    return "%2E" + encoded[1:] if encoded.startswith(".") else encoded or "%00"


def model_path(directory: Path, study_name: str, number: int) -> Path:
    """Where the model of trial ``number`` is kept (inside ``directory``, whatever the
    study's name)."""
    return directory / "models" / _folder_name(study_name) / f"trial-{number:05d}.keras"


@dataclass(frozen=True)
class Artifacts:
    """Per-trial outputs.

    Attributes:
        directory: Root of the artifact store and the kept models (shared by all workers:
            on several hosts, a shared file system).
        keep_models: How many of the best trials keep their trained model (0: none).
        figures: Whether to upload the PNG figures.
    """

    directory: Path
    keep_models: int = 3
    figures: bool = True

    def record(self, trial: optuna.Trial, *, history: dict[str, list[float]],
               evaluation: dict[str, Any], labels: np.ndarray | None,
               probabilities: np.ndarray | None) -> None:
        """Uploads the trial's figures as artifacts of ``trial``."""
        if not self.figures:
            return
        store = artifact_store(self.directory)
        title = f"trial {trial.number}"
        with tempfile.TemporaryDirectory() as tmp:
            files = [plots.training_curves(history, Path(tmp) / "training_curves.png", title)]
            if "confusion_matrix" in evaluation:
                files.append(plots.confusion_matrix(
                    evaluation["confusion_matrix"], evaluation.get("classes", []),
                    Path(tmp) / "confusion_matrix.png", title))
            if "roc_auc" in evaluation and labels is not None and probabilities is not None:
                files.append(plots.roc_curve(labels, probabilities[:, 1],
                                             evaluation["roc_auc"], Path(tmp) / "roc_curve.png",
                                             title))
            for file in files:
                optuna.artifacts.upload_artifact(artifact_store=store, file_path=str(file),
                                                 study_or_trial=trial, mimetype="image/png")

    def _top(self, study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        return sorted(complete, key=metric_value,  # type: ignore[arg-type]
                      reverse=metric_maximized(study))[:self.keep_models]

    def maybe_save_model(self, study: optuna.Study, number: int, value: float,
                         model: "keras.Model") -> Path | None:
        """Saves ``model`` if a trial with ``value`` would be among the best kept ones."""
        if self.keep_models <= 0:
            return None
        top = self._top(study)
        if len(top) >= self.keep_models:
            worst = metric_value(top[-1])
            assert worst is not None  # a COMPLETE trial has values
            better = value > worst if metric_maximized(study) else value < worst
            if not better:
                return None
        path = model_path(self.directory, study.study_name, number)
        path.parent.mkdir(parents=True, exist_ok=True)
        model.save(path)
        return path

    def prune_models(self, study: optuna.Study) -> list[Path]:
        """Deletes kept models of trials no longer among the best ``keep_models``."""
        folder = model_path(self.directory, study.study_name, 0).parent
        if not folder.is_dir():
            return []
        keep = {model_path(self.directory, study.study_name, t.number)
                for t in self._top(study)}
        running = {model_path(self.directory, study.study_name, t.number)
                   for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
        removed = []
        for path in folder.glob("trial-*.keras"):
            if path not in keep and path not in running:
                path.unlink(missing_ok=True)
                removed.append(path)
        return removed


def export_model(study: optuna.Study, directory: Path, out: Path,
                 model: int | str = "best") -> int:
    """Copies the kept model of trial ``model`` (a number, or ``"best"`` by the metric, also
    in a multi-objective study) to ``out``; returns the trial's number.

    Raises:
        ConfigError: ``model`` is neither ``"best"`` nor a trial number.
        StudyError: No completed trial yet, or no model kept for that trial.
    """
    import shutil

    from hpo.errors import ConfigError, StudyError

    if model == "best":
        found = best_by_metric(study)
        if found is None:
            raise StudyError(f"study {study.study_name!r} has no completed trial yet")
        number = found.number
    elif isinstance(model, int) and not isinstance(model, bool) and model >= 0:
        number = model
    else:
        raise ConfigError(f"$model expects 'best' or a trial number, received {model!r}")
    source = model_path(directory, study.study_name, number)
    if not source.is_file():
        raise StudyError(f"no saved model for trial {number} in {source.parent} (models are "
                         "kept for the $keep_models best trials only); export one of those, "
                         "or rerun with a larger $keep_models")
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, out)
    return number
