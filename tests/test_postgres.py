"""The same study on the real PostgreSQL server (HPO_TEST_POSTGRES_URL)."""

from __future__ import annotations

import uuid

import optuna
import pytest
from optuna.trial import TrialState

import hpo

pytestmark = pytest.mark.postgres


def test_a_study_runs_and_resumes_on_postgresql(tiny_study, postgres_url):
    name = f"pg-{uuid.uuid4().hex[:8]}"
    hpo.run(tiny_study, storage=postgres_url, study_name=name, n_trials=2, figures=False)
    study = hpo.run(tiny_study, storage=postgres_url, study_name=name, figures=False)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4
    stock = optuna.load_study(study_name=name, storage=postgres_url)
    assert stock.best_value == study.best_value
    assert stock.user_attrs["hpo:grid_size"] == 4
    optuna.delete_study(study_name=name, storage=postgres_url)
