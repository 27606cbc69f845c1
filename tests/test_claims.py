"""Grid claims read what changed since the last claim, not the whole study, and keep the
exactly-once rules: a waiting trial first, a failed point re-run while retries are left,
then the next point never started."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

import hpo.study._claims as claims_module
from hpo.config import load_study_config
from hpo.search import make_sampler
from hpo.storage import open_storage
from hpo.study import GridClaims, grid_coverage, open_study
from hpo.testing import write_study


@pytest.fixture()
def grid_study(tmp_path, image_folder):
    study_file = write_study(tmp_path / "g.toml", data=image_folder, name="claims",
                             extra_grid="batch_size = [8, 16, 32]")  # 2 x 2 x 3 = 12 points
    config = load_study_config(study_file)
    study = open_study(config, open_storage(f"sqlite:///{tmp_path / 'g.db'}"), sampler="grid")
    return config, study


def _run(study: optuna.Study, claims: GridClaims,
         state: TrialState = TrialState.COMPLETE) -> optuna.Trial:
    trial = claims.take()
    study.tell(trial, 0.5 if state == TrialState.COMPLETE else None, state=state)
    return trial


def test_each_claim_reads_only_what_changed(grid_study, monkeypatch):
    config, study = grid_study
    for _ in range(6):  # six points done by "another worker"
        other = GridClaims(study, config, study.sampler)
        assert other.claim(retries=1)
        _run(study, other)
    read = []
    original = claims_module.trial_param_groups

    def counting(*args, **kwargs):
        changed = original(*args, **kwargs)
        read.append(sum(group.count for group in changed))
        return changed

    monkeypatch.setattr(claims_module, "trial_param_groups", counting)
    claims = GridClaims(study, config, study.sampler)
    assert claims.claim(retries=1)
    assert read == [6]  # the first claim reads every trial's id, state and parameters once
    first = claims.take()  # RUNNING, not finished yet
    assert claims.claim(retries=1)
    assert read == [6, 1]  # then only the trial created since
    study.tell(first, 0.5)
    second = claims.take()
    assert claims.claim(retries=1)
    assert read == [6, 1, 2]  # the one unfinished before (now done) and the new one
    study.tell(second, 0.5)
    claims.take()  # the third claimed point, RUNNING
    params = [tuple(sorted(t.params.items())) for t in study.get_trials()]
    assert len(params) == len(set(params)) == 9


def test_a_failed_point_is_retried_then_the_grid_ends(grid_study):
    config, study = grid_study
    claims = GridClaims(study, config, study.sampler)
    assert claims.claim(retries=1)
    failed = _run(study, claims, TrialState.FAIL)
    assert claims.claim(retries=1)  # the failed point again, before any new point
    retried = claims.take()
    assert retried.params == failed.params
    study.tell(retried, state=TrialState.FAIL)
    while claims.claim(retries=1):  # failed twice: given up; the 11 others run once each
        _run(study, claims)
    states = [t.state for t in study.get_trials()]
    assert states.count(TrialState.COMPLETE) == 11 and states.count(TrialState.FAIL) == 2
    again = GridClaims(study, config, study.sampler)  # a new worker agrees: nothing left
    assert not again.claim(retries=1)
    assert again.claim(retries=2)  # one more retry allowed: the failed point comes back


def test_points_another_worker_started_are_never_claimed_twice(grid_study):
    config, study = grid_study
    mine = GridClaims(study, config, study.sampler)
    theirs = GridClaims(study, config, make_sampler("grid", config, None))
    seen = []
    while True:
        for claims in (mine, theirs):
            if not claims.claim(retries=0):
                break
            seen.append(tuple(sorted(_run(study, claims).params.items())))
        else:
            continue
        break
    assert len(seen) == len(set(seen)) == 12


def test_the_claims_coverage_is_grid_coverage_without_a_second_read(grid_study, monkeypatch):
    config, study = grid_study
    other = GridClaims(study, config, make_sampler("grid", config, None))
    for state in (TrialState.COMPLETE, TrialState.COMPLETE, TrialState.FAIL,
                  TrialState.PRUNED, TrialState.FAIL):
        assert other.claim(retries=0)
        _run(study, other, state)
    assert other.claim(retries=0)
    other.take()  # one point RUNNING
    assert other.claim(retries=0)
    other.queue()  # and one WAITING
    reads = []
    original = claims_module.trial_param_groups
    monkeypatch.setattr(claims_module, "trial_param_groups",
                        lambda *a, **k: reads.append(k["after"]) or original(*a, **k))
    claims = GridClaims(study, config, study.sampler)
    coverage = claims.coverage()
    expected = grid_coverage(study, config)
    assert (coverage.done, coverage.running, coverage.failed, coverage.left) == \
        (expected.done, expected.running, expected.failed, expected.left)
    assert (len(coverage.done), len(coverage.running), len(coverage.failed)) == (3, 2, 2)
    assert claims.claim(retries=0)  # a WAITING trial is there: nothing new read whole
    assert reads[0] == -1 and all(after >= 0 for after in reads[1:])


def test_a_worker_takes_the_points_it_has_compiled_first_and_each_point_once(grid_study):
    """``prefer`` (the worker's compiled steps) reorders claims within the lookahead; two
    workers, one preferring batch size 32, another nothing, still run the 12 points once."""
    config, study = grid_study
    prefers = GridClaims(study, config, study.sampler)
    plain = GridClaims(study, config, study.sampler)
    order = [point for _, point in prefers._order]
    taken = []
    while True:
        if not prefers.claim(retries=1, prefer=lambda point: point["batch_size"] == 32):
            break
        taken.append(dict(_run(study, prefers).params))
        if plain.claim(retries=1, prefer=lambda point: False):
            _run(study, plain)
    # the first worker's first four trials are the four batch-32 points it had not
    # seen another worker start, in grid order; then it goes on in grid order
    thirty_two = [p for p in order if p["batch_size"] == 32]
    assert [p for p in taken if p["batch_size"] == 32] == thirty_two
    assert taken[:len(thirty_two)] == thirty_two
    params = [tuple(sorted(t.params.items())) for t in study.get_trials()]
    assert len(params) == len(set(params)) == 12
    assert all(t.state == TrialState.COMPLETE for t in study.get_trials())


def test_compiled_points_never_start_before_the_defaults_taken_first(grid_study):
    """``--enqueue-defaults`` on a grid promises the Keras-default points first; a worker's
    preference for points it has compiled (here: everything but the defaults) reorders
    claims within the defaults, then within the rest, never across."""
    from hpo.search import is_default

    config, study = grid_study
    claims = GridClaims(study, config, study.sampler, defaults_first=True)
    defaults = sum(1 for _, point in claims._order if is_default(point))
    assert 0 < defaults < 12
    taken = []
    while claims.claim(retries=1, prefer=lambda point: not is_default(point)):
        taken.append(dict(_run(study, claims).params))
    assert [is_default(p) for p in taken] == [True] * defaults + [False] * (12 - defaults)


def _given_up(study: optuna.Study, like: optuna.Trial) -> None:
    """A trial of ``like``'s grid point that a worker gave up before it ran (taken while
    its study lock was lost, the point taken by another worker meanwhile), as stored."""
    frozen = study._storage.get_trial(like._trial_id)
    study.add_trial(optuna.create_trial(
        state=TrialState.FAIL, params=frozen.params, distributions=frozen.distributions,
        system_attrs={**frozen.system_attrs, "hpo:not_run": True},
        user_attrs={"fail_reason": "not run: its grid point was also taken by trial "
                    f"{like.number} while this worker's study lock was lost"}))


@pytest.mark.parametrize("sqlite", [True, False], ids=["grouped-in-sql", "read-whole"])
def test_a_trial_given_up_before_it_ran_uses_none_of_its_points_retries(grid_study,
                                                                       monkeypatch, sqlite):
    """The point's one run failed: it is re-run (``--retry-failed 1``) whatever was given
    up beside it; a point with nothing but given-up trials is re-run even with no retries
    left, and counts as left, not failed; the retry carries none of their records."""
    config, study = grid_study
    if not sqlite:  # a storage hpo cannot count in SQL (a journal file) reads every trial
        monkeypatch.setattr(claims_module, "trial_param_groups", lambda *a, **k: None)
    claims = GridClaims(study, config, study.sampler)
    assert claims.claim(retries=1)
    ran = claims.take()
    _given_up(study, ran)
    study.tell(ran, state=TrialState.FAIL)
    assert claims.claim(retries=1)
    retry = claims.take()
    assert retry.params == ran.params
    stored = study._storage.get_trial(retry._trial_id)
    assert "fail_reason" not in stored.user_attrs and "hpo:not_run" not in stored.system_attrs
    study.tell(retry, 0.5)
    assert claims.claim(retries=0)
    alone = claims.take()  # both workers gave the next point up: nothing else holds it
    _given_up(study, alone)
    study._storage.set_trial_system_attr(alone._trial_id, "hpo:not_run", True)
    study.tell(alone, state=TrialState.FAIL)
    point = tuple(alone.params[name] for name in config.grid)
    for coverage in (grid_coverage(study, config), claims.coverage()):
        assert point not in coverage.failed and point not in coverage.done
        assert coverage.left == config.grid_size - 1  # only the first point is done
    assert claims.claim(retries=0)
    again = claims.take()
    assert again.params == alone.params
    assert "fail_reason" not in again.user_attrs
    assert grid_coverage(study, config).running == {point}
    from hpo.reporting import study_status

    status = study_status(study, config)  # hpo status: the three never ran, none failed
    assert status["not_run"] == 3 and status["states"]["FAIL"] == 4
    assert status["grid"]["failed"] == 0 and status["grid"]["done"] == 1
