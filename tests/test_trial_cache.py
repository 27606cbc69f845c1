"""A worker's first ``study.ask()`` reads only the trials it can take, not the whole study
(issue 16: Optuna's trial cache loads every trial, attributes and all, at the first ask);
the first read that needs finished trials loads the cache once, as Optuna does."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from hpo.storage import best_trial_numbers, open_storage, trial_cache, trial_param_groups
from hpo.storage._optuna import LazyTrialCache, count_trials
from hpo.study import finished_trials

_SPACE = {"optimizer": CategoricalDistribution(["Adam", "SGD"]),
          "learning_rate": FloatDistribution(1e-4, 1e-1, log=True),
          "batch_size": CategoricalDistribution([16, 32])}


@pytest.fixture()
def finished_study(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 'c.db'}")
    study = optuna.create_study(study_name="c", storage=storage)
    study.add_trials([optuna.create_trial(
        state=TrialState.COMPLETE if i % 3 else TrialState.FAIL, value=i if i % 3 else None,
        params={"optimizer": ["Adam", "SGD"][i % 2], "learning_rate": 10 ** (-1 - i / 10),
                "batch_size": [16, 32][i // 2 % 2]},
        distributions=_SPACE, user_attrs={"note": "x" * 50}) for i in range(30)])
    return storage, study


def _reads(cache: LazyTrialCache, monkeypatch) -> list[object]:
    """Records the ``states`` of every whole-trial read the cache makes of the database."""
    calls: list[object] = []
    original = cache._backend._get_trials

    def counting(study_id, states, included_trial_ids, trial_id_greater_than):
        calls.append(states)
        return original(study_id, states, included_trial_ids, trial_id_greater_than)

    monkeypatch.setattr(cache._backend, "_get_trials", counting)
    return calls


def test_ask_reads_only_waiting_trials_until_finished_ones_are_needed(finished_study,
                                                                      monkeypatch):
    storage, _ = finished_study
    cache = trial_cache(storage)
    assert isinstance(cache, LazyTrialCache)
    study = optuna.load_study(study_name="c", storage=cache,
                              sampler=optuna.samplers.RandomSampler(seed=0))
    reads = _reads(cache, monkeypatch)
    study.enqueue_trial({"optimizer": "SGD", "learning_rate": 0.01, "batch_size": 16})
    trial = study.ask()
    assert trial.suggest_categorical("optimizer", ["Adam", "SGD"]) == "SGD"
    study.tell(trial, 1.0)
    trial = study.ask()  # nothing waiting: a random trial
    study.tell(trial, 2.0)
    assert reads and all(states is not None and set(states) <= {TrialState.WAITING,
                                                                TrialState.RUNNING}
                         for states in reads)
    assert cache._studies.get(study._study_id) is None or \
        len(cache._studies[study._study_id].trials) <= 2  # only what this worker created
    # the first read of finished trials loads them all once, then incrementally
    reads.clear()
    assert len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) == 22
    assert reads == [None]
    assert len(study.get_trials(deepcopy=False)) == 32
    assert reads == [None, None]  # the incremental read: created since, or unfinished


def test_tpe_sees_the_whole_history_through_the_lazy_cache(finished_study):
    storage, _ = finished_study
    lazy = optuna.load_study(study_name="c", storage=trial_cache(storage),
                             sampler=optuna.samplers.TPESampler(seed=1))
    eager = optuna.load_study(study_name="c", storage=storage,
                              sampler=optuna.samplers.TPESampler(seed=1))
    picks = []
    for study in (lazy, eager):
        trial = study.ask(_SPACE)
        picks.append(trial.params)
        study.tell(trial, state=TrialState.FAIL)
    assert picks[0] == picks[1]


def test_the_grouped_read_counts_what_the_whole_read_lists(finished_study):
    storage, study = finished_study
    running = study.ask(_SPACE)
    names = ["optimizer", "batch_size"]
    groups = trial_param_groups(storage, study._study_id, names, after=-1, unfinished=set())
    whole = study.get_trials(deepcopy=False)
    expected: dict[tuple, list[int]] = {}
    for t in whole:
        own = None if t.state.is_finished() else t._trial_id
        key = (t.state, own, tuple(sorted((n, t.params[n]) for n in names if n in t.params)))
        expected.setdefault(key, []).append(t._trial_id)
    assert {(g.state, g.trial_id, tuple(sorted(g.params.items()))): (g.count, g.last_id)
            for g in groups} == {k: (len(v), max(v)) for k, v in expected.items()}
    assert [g.trial_id for g in groups if g.state == TrialState.RUNNING] == [running._trial_id]
    # incremental: what was created after a trial id, and the ids asked for
    newer = trial_param_groups(storage, study._study_id, names, after=whole[-2]._trial_id,
                               unfinished={whole[0]._trial_id})
    assert sorted(g.last_id for g in newer) == [whole[0]._trial_id, running._trial_id]


def test_groups_decode_values_whatever_the_bounds_each_trial_was_given(tmp_path):
    """Groups are formed on stored values and decoded with one trial's distribution: exact,
    since Optuna keeps one kind of distribution per name in a study (a categorical's choices
    equal), and a number's stored value does not depend on its bounds."""
    storage = open_storage(f"sqlite:///{tmp_path / 'b.db'}")
    study = optuna.create_study(study_name="b", storage=storage)
    for i, high in enumerate([0.1, 1.0, 0.1, 1.0]):
        study.add_trial(optuna.create_trial(
            state=TrialState.COMPLETE, value=float(i),
            params={"learning_rate": 0.01 * (1 + i % 2), "units": 8 + i % 2,
                    "optimizer": ["Adam", "SGD"][i % 2]},
            distributions={"learning_rate": FloatDistribution(1e-4, high, log=True),
                           "units": IntDistribution(1, 8 + 8 * i),
                           "optimizer": CategoricalDistribution(["Adam", "SGD"])}))
    groups = trial_param_groups(storage, study._study_id, ["learning_rate", "units",
                                                           "optimizer"], after=-1,
                                unfinished=set())
    assert sorted((g.params["learning_rate"], g.params["units"], g.params["optimizer"],
                   g.count) for g in groups) == [(0.01, 8, "Adam", 2), (0.02, 9, "SGD", 2)]


def test_a_finished_count_is_one_query_not_a_load(finished_study, monkeypatch):
    storage, _ = finished_study
    cache = trial_cache(storage)
    study = optuna.load_study(study_name="c", storage=cache)
    reads = _reads(cache, monkeypatch)
    assert finished_trials(study) == 30
    assert cache.get_n_trials(study._study_id) == 30
    assert cache.get_n_trials(study._study_id, TrialState.FAIL) == 10
    assert reads == []  # counted by the database, not by loading 30 trials


def test_hpo_s_own_reads_ride_out_a_dropped_connection(finished_study, monkeypatch):
    """The grouped grid read, the count and the ranking of kept models retry through an
    outage as every storage call of hpo's does."""
    import sqlalchemy
    from optuna.storages._rdb import storage as rdb

    storage, study = finished_study
    original = rdb._create_scoped_session
    dropped = []

    def drops_once(*args, **kwargs):
        if len(dropped) < 3:
            dropped.append(1)
            raise sqlalchemy.exc.OperationalError(
                "SELECT 1", None, ConnectionError("server closed the connection unexpectedly"))
        return original(*args, **kwargs)

    monkeypatch.setattr(rdb, "_create_scoped_session", drops_once)
    assert count_trials(storage, study._study_id) == 30
    groups = trial_param_groups(storage, study._study_id, ["optimizer"], after=-1,
                                unfinished=set())
    assert sum(g.count for g in groups) == 30
    assert [n for n, _ in best_trial_numbers(storage, study._study_id, 2, maximize=True)] == \
        [29, 28]
    assert len(dropped) == 3
