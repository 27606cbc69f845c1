"""What a trial leaves behind: PNG figures as Optuna artifacts, and the best trained models.

Figures (training curves, confusion matrix, ROC curve) are uploaded to an Optuna
``FileSystemArtifactStore``, so optuna-dashboard shows them on each trial's page. Trained
models (``.keras``) are kept for the ``keep_models`` best trials only, in
``DIR/models/STUDY/trial-NNNNN.keras``; a model that falls out of the top is deleted, so
the disk does not fill over a 384-run grid, and a model that would not enter the top is
never written. All studies' models under ``DIR`` together stay under ``max_models_gb``:
past it, a study's kept models other than its best are deleted, worst first. A model is
written to a ``.part-*`` file and renamed into place, so a kill mid-save never leaves a
broken ``trial-*.keras``; leftover parts are removed by the next prune.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
from optuna.trial import TrialState

from hpo.config import TrialSettings
from hpo.storage import best_trial_numbers, storage_of, stored_trials, study_id
from hpo.study import attrs, best_by_metric, metric_maximized, pid_alive
from hpo.trial import _plots as plots

if TYPE_CHECKING:
    import keras

__all__ = ["Artifacts", "artifact_store", "disk_usage", "export_model", "model_path",
           "models_folder"]

_log = logging.getLogger(__name__)
_PART = ".part-"  # prefix of a model being written: never matches "trial-*.keras"
_STALE_PART_S = 6 * 3600  # a part left by another host is removed after this long


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


def models_folder(directory: Path, study: optuna.Study | str) -> Path:
    """The folder of a study's kept models, inside ``directory`` whatever its name: keyed by
    the study's identity (``models/NAME-UID8``, its ``hpo:study_uid``), so that a study of
    the same name in another storage run from the same folder never shares, prunes or
    overwrites them. A study created before hpo recorded that identity (or a bare name)
    keeps the old layout, ``models/NAME``."""
    if isinstance(study, str):
        return directory / "models" / _folder_name(study)
    uid = study.user_attrs.get(attrs.STUDY_UID)
    folder = _folder_name(study.study_name)
    if isinstance(uid, str) and re.fullmatch(r"[0-9a-f]{8,}", uid):
        folder = f"{folder}-{uid[:8]}"
    return directory / "models" / folder


def model_path(directory: Path, study: optuna.Study | str, number: int,
               folder: Path | None = None) -> Path:
    """Where the model of trial ``number`` of ``study`` is kept (see :func:`models_folder`;
    ``folder``: that folder, already looked up)."""
    return (folder or models_folder(directory, study)) / f"trial-{number:05d}.keras"


@dataclass(frozen=True)
class Artifacts:
    """Per-trial outputs.

    Attributes:
        directory: Root of the artifact store and the kept models (shared by all workers:
            on several hosts, a shared file system).
        keep_models: How many of the best trials keep their trained model (0: none).
        figures: Whether to upload the PNG figures.
        max_models_gb: Most gigabytes all kept models under ``directory`` take together;
            past it each study keeps only its best model.
    """

    directory: Path
    keep_models: int = 3
    figures: bool = True
    max_models_gb: float = 10.0

    @classmethod
    def of(cls, settings: TrialSettings) -> Artifacts:
        """The artifacts a run's trial section asks for (its folder made absolute)."""
        return cls(directory=settings.artifacts.resolve(), keep_models=settings.keep_models,
                   figures=settings.figures, max_models_gb=settings.max_models_gb)

    def draw_history(self, folder: Path, title: str, history: dict[str, list[float]],
                     result_epoch: int | None = None) -> list[Path]:
        """Draws the training curves into ``folder``, the result epoch (whose weights the
        other figures and numbers come from) marked (safe off the main thread)."""
        return [plots.training_curves(history, folder / "training_curves.png", title,
                                      result_epoch)]

    def draw_evaluation(self, folder: Path, title: str, evaluation: dict[str, Any],
                        labels: np.ndarray | None,
                        probabilities: np.ndarray | None) -> list[Path]:
        """Draws the confusion matrix and, for two classes, the ROC curve into ``folder``."""
        files = []
        if "confusion_matrix" in evaluation:
            files.append(plots.confusion_matrix(
                evaluation["confusion_matrix"], evaluation.get("classes", []),
                folder / "confusion_matrix.png", title))
        if "roc_auc" in evaluation and labels is not None and probabilities is not None:
            files.append(plots.roc_curve(labels, probabilities[:, 1], evaluation["roc_auc"],
                                         folder / "roc_curve.png", title))
        return files

    def upload(self, trial: optuna.Trial, files: list[Path]) -> None:
        """Uploads figure files as artifacts of ``trial`` (optuna-dashboard shows them)."""
        store = artifact_store(self.directory)
        for file in files:
            optuna.artifacts.upload_artifact(artifact_store=store, file_path=str(file),
                                             study_or_trial=trial, mimetype="image/png")

    def _top(self, study: optuna.Study) -> list[tuple[int, float]]:
        """(number, metric) of the ``keep_models`` best COMPLETE trials, best first: one
        ordered query on an RDB storage, a sort of every trial elsewhere."""
        # a trial a search took from its grid has its model in the grid study's folder
        top = best_trial_numbers(storage_of(study), study_id(study), self.keep_models,
                                 maximize=metric_maximized(study),
                                 without_user_attr=attrs.IMPORTED_FROM)
        if top is not None:
            return top
        complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                    if attrs.IMPORTED_FROM not in t.user_attrs]
        ranked = sorted(complete, key=lambda t: t.values[0],  # the metric: the first value
                        reverse=metric_maximized(study))[:self.keep_models]
        return [(t.number, float(t.values[0])) for t in ranked]

    def model_to_keep(self, study: optuna.Study, number: int, value: float) -> Path | None:
        """Where to save trial ``number``'s model if a trial with ``value`` would be among
        the best kept ones; None when the keep policy would delete it at once."""
        if self.keep_models <= 0:
            return None
        top = self._top(study)
        if len(top) >= self.keep_models:
            worst = top[-1][1]
            better = value > worst if metric_maximized(study) else value < worst
            if not better:
                return None
        return model_path(self.directory, study, number)

    @staticmethod
    def save_model(model: "keras.Model", path: Path) -> None:
        """Writes ``model`` to ``path`` atomically: into a ``.part-*`` file beside it, then
        renamed, so ``path`` is either absent or whole."""
        path.parent.mkdir(parents=True, exist_ok=True)
        part = path.with_name(f"{_PART}{socket.gethostname()}-{os.getpid()}-{path.name}")
        try:
            model.save(part)
            os.replace(part, path)
        finally:
            part.unlink(missing_ok=True)

    def prune_models(self, study: optuna.Study) -> list[Path]:
        """Deletes kept models of trials no longer among the best ``keep_models``, and
        this study's models other than its best while all studies' models take more than
        ``max_models_gb``; removes parts left by killed saves. Returns what it deleted."""
        folder = models_folder(self.directory, study)
        if not folder.is_dir():
            return []
        top = self._top(study)
        keep = {model_path(self.directory, study, number, folder) for number, _ in top}
        running = {model_path(self.directory, study, t.number, folder)
                   for t in stored_trials(study, (TrialState.RUNNING,))}
        removed = [path for path in _stale_parts(folder) if _unlink(path)]
        for path in folder.glob("trial-*.keras"):
            if path not in keep and path not in running and _unlink(path):
                removed.append(path)
        limit = self.max_models_gb * 1e9
        total = disk_usage(self.directory)["models_bytes"]
        for number, _ in reversed(top[1:]):  # worst first, never the best
            if total <= limit:
                break
            path = model_path(self.directory, study, number, folder)
            size = path.stat().st_size if path.is_file() else 0
            if size and _unlink(path):
                _log.info("removed the model of trial %d: kept models take more than "
                          "--max-models-gb %g", number, self.max_models_gb)
                removed.append(path)
                total -= size
        return removed


def _unlink(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:  # another worker pruned it first
        return False
    return True


def _stale_parts(folder: Path) -> list[Path]:
    """Parts of saves that can no longer finish: their process (on this host) is gone, or,
    from another host, they are hours old."""
    host = socket.gethostname()
    stale = []
    for part in folder.glob(f"{_PART}*"):
        owner = part.name[len(_PART):].rsplit("-trial-", 1)[0]
        name, _, pid = owner.rpartition("-")
        if name == host and pid.isdigit():
            if not pid_alive(int(pid)):  # its process is gone: the save cannot finish
                stale.append(part)
            continue
        try:
            if time.time() - part.stat().st_mtime >= _STALE_PART_S:
                stale.append(part)
        except FileNotFoundError:  # removed meanwhile
            continue
    return stale


def disk_usage(directory: Path) -> dict[str, int]:
    """Bytes under ``directory``: kept models (all studies) and everything else (figures)."""
    models = other = 0
    if directory.is_dir():
        for root, _, files in os.walk(directory):
            in_models = Path(root).is_relative_to(directory / "models")
            for name in files:
                try:
                    size = os.stat(os.path.join(root, name)).st_size
                except FileNotFoundError:
                    continue
                if in_models:
                    models += size
                else:
                    other += size
    return {"models_bytes": models, "other_bytes": other}


def export_model(study: optuna.Study, directory: Path, out: Path,
                 model: int | str = "best", *, force: bool = False) -> tuple[int, Path]:
    """Copies the kept model of trial ``model`` (a number, or ``"best"`` by the metric, also
    in a multi-objective study) to ``out``, or into it as ``STUDY-trialN.keras`` when ``out``
    is a folder; an existing file is replaced only with ``force``.

    Returns:
        The trial's number and the file written.

    Raises:
        ConfigError: ``model`` is neither ``"best"`` nor a trial number.
        StudyError: No completed trial yet, or no model of that trial here, with the reason:
            no such trial; it did not complete (failed, pruned, running); it was never kept
            or was pruned from the best; it was kept in another artifacts folder.
        OutputError: ``out`` exists (without ``force``) or cannot be written.
    """
    import shutil

    from hpo.errors import ConfigError, OutputError, StudyError, writing

    if model == "best":
        found = best_by_metric(study)
        if found is None:
            raise StudyError(f"study {study.study_name!r} has no completed trial yet")
        trial = found
    elif isinstance(model, int) and not isinstance(model, bool) and model >= 0:
        trial = _trial_numbered(study, model)
    else:
        raise ConfigError(f"$model expects 'best' or a trial number, received {model!r}")
    taken = trial.user_attrs.get(attrs.IMPORTED_FROM)
    if isinstance(taken, dict):  # a grid trial taken as the search's history: its model is
        # filed with the grid study that trained it
        grid = optuna.load_study(study_name=str(taken["study"]), storage=storage_of(study))
        source = _kept_model(grid, directory, _trial_numbered(grid, int(taken["trial"])))
    else:
        source = _kept_model(study, directory, trial)
    with writing(out, "the model"):  # a name too long, say
        if out.is_dir():
            out = out / f"{study.study_name}-trial{trial.number}.keras"
        exists, is_dir = out.exists() or out.is_symlink(), out.is_dir()
    if exists and not force:
        kind = "a folder" if is_dir else "a file"
        raise OutputError(f"$out {str(out)!r} exists ({kind}); pass $force to replace it, or "
                          "another $out")
    if is_dir:
        raise OutputError(f"$out {str(out)!r} is a folder that the model file would replace; "
                          "pass another $out")
    with writing(out, "the model"):
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, out)
    return trial.number, out


def _trial_numbered(study: optuna.Study, number: int) -> optuna.trial.FrozenTrial:
    from hpo.errors import StudyError

    storage = storage_of(study)
    try:
        tid = storage.get_trial_id_from_study_id_trial_number(study_id(study), number)
    except KeyError:
        count = storage.get_n_trials(study_id(study))
        raise StudyError(f"study {study.study_name!r} has no trial {number} (received trial "
                         f"{number}, expected one of its trials 0 to {count - 1}); see "
                         f"'hpo trials {study.study_name}'" if count else
                         f"study {study.study_name!r} has no trials yet (received trial "
                         f"{number}); run it first") from None
    return storage.get_trial(tid)


def _kept_model(study: optuna.Study, directory: Path, trial: optuna.trial.FrozenTrial
                ) -> Path:
    """The file of ``trial``'s kept model under ``directory``, or why there is none.

    Raises:
        StudyError: The trial did not complete; its model was never kept or was deleted
            from the best; it was kept under another artifacts folder.
    """
    from hpo.errors import StudyError

    number = trial.number
    if trial.state != TrialState.COMPLETE:
        state = {TrialState.FAIL: "failed", TrialState.PRUNED: "was pruned",
                 TrialState.RUNNING: "is still running",
                 TrialState.WAITING: "has not started"}.get(trial.state, str(trial.state))
        reason = str(trial.user_attrs.get(attrs.FAIL_REASON) or "").strip().split("\n")[0][:200]
        raise StudyError(f"trial {number} of {study.study_name!r} {state}"
                         f"{f' ({reason})' if reason and trial.state == TrialState.FAIL else ''}"
                         ": only a completed trial has a trained model; export 'best' or "
                         "another completed trial (see 'hpo trials')")
    source = model_path(directory, study, number)
    if source.is_file():
        return source
    recorded = trial.user_attrs.get("model_path")
    if isinstance(recorded, str):
        kept = Path(recorded)
        root = kept.parent.parent.parent  # ARTIFACTS/models/FOLDER/trial-N.keras
        if root == directory:
            if kept.is_file():  # the layout before studies had an identity
                return kept
        elif kept.is_file():
            raise StudyError(f"the model of trial {number} was kept in another artifacts "
                             f"folder, {root} (received $artifacts {directory}); pass "
                             f"$artifacts {root}")
        else:
            raise StudyError(f"the model of trial {number} was kept in {root}, another "
                             f"artifacts folder than {directory}, and is no longer there "
                             f"(deleted when it fell out of the $keep_models best, or the "
                             f"folder moved); pass $artifacts with the folder that holds it")
        raise StudyError(f"the model of trial {number} was kept in {source.parent} and then "
                         "deleted: it fell out of the $keep_models best (or $max_models_gb "
                         "was reached); export one of the best trials, or rerun with a "
                         "larger $keep_models")
    raise StudyError(f"trial {number} was not among the $keep_models best trials when it "
                     f"ended, so its model was never saved (nothing in {source.parent}); "
                     "export one of the best, or rerun with a larger $keep_models")
