"""``--n-trials N`` is the run's total: across ``--workers``, recycled processes and
``hpo.run``, counted in the database (issue 25, item 4)."""

from __future__ import annotations

import optuna
import pytest

from tests.conftest import run_cli

#: The subject here is processes and storage, not the backend: the hpo processes train on
#: JAX, which starts faster (tests/conftest.py, ``_keras_backend_of_the_test``).
pytestmark = pytest.mark.keras_backend("jax")


@pytest.mark.parametrize("sampler", ["grid", "random"])
def test_n_trials_is_the_total_of_a_run_of_several_workers(tiny_study, sqlite_url, tmp_path,
                                                           sampler):
    """Two workers, --n-trials 3: three trials, not three each (the 2x2 grid has four)."""
    result = run_cli("run", "--study", str(tiny_study), "--storage", sqlite_url,
                     "--sampler", sampler, "--workers", "2", "--n-trials", "3", "--quiet",
                     "--no-figures", "--keep-models", "0", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = optuna.get_all_study_summaries(sqlite_url)
    assert len(summary) == 1
    study = optuna.load_study(study_name=summary[0].study_name, storage=sqlite_url)
    assert len(study.trials) == 3, [(t.number, t.state) for t in study.trials]
    runs = {t.system_attrs.get("hpo:run_id") for t in study.trials}
    assert len(runs) == 1 and None not in runs  # one run, whichever worker took each


def test_a_recycled_worker_keeps_counting_the_same_run(tiny_study, sqlite_url, tmp_path):
    """--recycle-after 1 hands over to a fresh process after each trial: the run still ends
    after --n-trials in all, random sampler (no grid to end it)."""
    result = run_cli("run", "--study", str(tiny_study), "--storage", sqlite_url,
                     "--sampler", "random", "--n-trials", "2", "--recycle-after", "1",
                     "--quiet", "--no-figures", "--keep-models", "0", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    name = optuna.get_all_study_summaries(sqlite_url)[0].study_name
    trials = optuna.load_study(study_name=name, storage=sqlite_url).trials
    assert len(trials) == 2
    assert len({t.system_attrs.get("hpo:run_id") for t in trials}) == 1
