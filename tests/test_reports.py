"""Figures as artifacts, top-k models, the thesis tables and model export."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

import hpo
from hpo.config import load_study_config
from hpo.reporting import build_report, write_report
from hpo.testing import write_study
from hpo.trial import Artifacts, model_path, models_folder
from tests.conftest import built_once, run_here


@pytest.fixture(scope="module")
def finished(tmp_path_factory, image_folder):
    """A finished 2x2 grid at batch 32 (so the Keras defaults are grid points), trained
    once per test run (:func:`built_once`) and only read here."""
    def build(folder):
        study_file = write_study(folder / "r.toml", data=image_folder, name="reported",
                                 epochs=4, extra_grid="batch_size = [32]")
        hpo.run(study_file, storage=f"sqlite:///{folder / 'r.db'}",
                artifacts=folder / "artifacts", keep_models=2)

    folder = built_once(tmp_path_factory, "reported", build)
    storage = f"sqlite:///{folder / 'r.db'}"
    artifacts = Artifacts(directory=folder / "artifacts", keep_models=2)
    study = optuna.load_study(study_name="reported", storage=storage)
    return folder / "r.toml", storage, artifacts, study


def test_each_trial_has_its_figures_as_optuna_artifacts(finished):
    _, _, _, study = finished
    for trial in study.trials:
        metas = optuna.artifacts.get_all_artifact_meta(trial, storage=study._storage)
        names = sorted(m.filename for m in metas)
        assert names == ["confusion_matrix.png", "roc_curve.png", "training_curves.png"]
        assert {m.mimetype for m in metas} == {"image/png"}


def test_only_the_best_k_models_stay_on_disk(finished):
    _, _, artifacts, study = finished
    folder = models_folder(artifacts.directory, study)
    assert folder.name.startswith("reported-")  # filed under the study's identity
    kept = sorted(p.name for p in folder.glob("*.keras"))
    assert len(kept) == 2
    ranked = sorted(study.trials, key=lambda t: (-t.value, t.number))
    # Ties may keep either of the tied trials: compare the values kept with the top two.
    kept_values = sorted(study.trials[int(p[6:11])].value for p in kept)
    assert kept_values == sorted(t.value for t in ranked[:2])


def test_report_tables_match_the_trials_in_the_database(finished):
    study_file, storage, _, study = finished
    config = load_study_config(study_file)
    report = build_report(optuna.load_study(study_name="reported", storage=storage),
                          config.training)
    by_key = {(t.params["optimizer"], t.params["learning_rate"]): t for t in study.trials}
    defaults = {r["optimizer"]: r for r in report.defaults}
    assert defaults["Adam"]["trial"] == by_key[("Adam", 0.001)].number
    assert defaults["SGD"]["trial"] == by_key[("SGD", 0.01)].number
    for row in report.defaults:
        trial = study.trials[row["trial"]]
        assert row["test_accuracy"] == trial.user_attrs["test_accuracy"]
        assert (row["tp"], row["tn"]) == (trial.user_attrs["tp"], trial.user_attrs["tn"])
        assert row["batch_size"] == 32
    for row in report.best_per_optimizer:
        candidates = [t for t in study.trials if t.params["optimizer"] == row["optimizer"]]
        assert row["value"] == max(t.value for t in candidates)
        expected = 100 * (row["test_accuracy"] - defaults[row["optimizer"]]["test_accuracy"])
        assert row["change"] == pytest.approx(expected)
    assert report.best["trial"] == study.best_trial.number
    assert report.best["roc_auc"] == study.best_trial.user_attrs["roc_auc"]
    assert len({t.value for t in study.trials}) > 1, "the fixture must give varied results"
    assert set(report.importances["fanova"]) == {"optimizer", "learning_rate", "batch_size"}
    markdown = write_report(report, "md", None)
    assert "Table 1" in markdown and "Table 2" in markdown
    html = write_report(report, "html", None)
    assert "data:image/png;base64," in html and "<table>" in html
    assert "\\begin{tabular}" in write_report(report, "latex", None)
    csv_text = write_report(report, "csv", None)
    assert csv_text.count("\n") == 1 + len(report.defaults) + len(report.best_per_optimizer)


def test_report_and_export_from_the_cli(finished, tmp_path):
    study_file, storage, artifacts, study = finished
    result = run_here("report", str(study_file), "--storage", storage, "--format", "html",
                      "--out", str(tmp_path / "rep"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "rep" / "report.html").stat().st_size > 1000
    exported = run_here("export", "reported", "--out", str(tmp_path / "best.keras"),
                        "--storage", storage, "--artifacts", str(artifacts.directory),
                        cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    import keras

    model = keras.saving.load_model(tmp_path / "best.keras")
    assert model.output_shape == (None, 2)
    worst = min(study.trials, key=lambda t: t.value)
    if not model_path(artifacts.directory, study, worst.number).exists():
        missing = run_here("export", "reported", "--model", str(worst.number), "--out",
                           str(tmp_path / "x.keras"), "--storage", storage, "--artifacts",
                           str(artifacts.directory), cwd=tmp_path)
        assert missing.returncode == 2
        assert "--keep-models" in missing.stderr
    assert {t.state for t in study.trials} == {TrialState.COMPLETE}
