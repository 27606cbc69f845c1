"""The study lock: its files exclusive across processes and gone once released; its
PostgreSQL lock, lost with its connection, never lets a grid point or a run's last trial be
taken twice."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from hpo.storage import study_lock
from tests.conftest import another_hosts_lock, cut_advisory_locks

_COUNT = """
import sys, time
from pathlib import Path
import optuna
from hpo.storage import study_lock

storage = optuna.storages.RDBStorage(sys.argv[1])
counter = Path(sys.argv[2])
for _ in range(int(sys.argv[3])):
    with study_lock(storage, "shared"):
        seen = int(counter.read_text())
        time.sleep(0.002)  # a reader that was let in meanwhile would write the same number
        counter.write_text(str(seen + 1))
"""


def test_the_sqlite_study_lock_leaves_nothing_beside_the_database(tmp_path: Path) -> None:
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'hpo.db'}")
    try:
        with study_lock(storage, "a"):
            assert len(list(tmp_path.glob("hpo.db.*.lock"))) == 1  # held: it exists
        with study_lock(storage, "a"), study_lock(storage, "b"):
            pass
    finally:
        storage.engine.dispose()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hpo.db"]


def test_processes_taking_the_removed_lock_in_turn_never_hold_it_together(
        tmp_path: Path) -> None:
    """Each holder removes the file before unlocking, while others wait on it: the one
    let in next must see that and lock the new file, or two would hold the lock at once
    and the count below would lose increments."""
    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    optuna.storages.RDBStorage(url).engine.dispose()  # the schema, before they race
    counter = tmp_path / "count"
    counter.write_text("0")
    procs = [subprocess.Popen([sys.executable, "-c", _COUNT, url, str(counter), "60"])
             for _ in range(4)]
    assert [proc.wait(timeout=120) for proc in procs] == [0, 0, 0, 0]
    assert counter.read_text() == "240"
    assert not list(tmp_path.glob("*.lock"))


def test_a_change_of_folder_inside_the_lock_removes_its_own_file(tmp_path: Path,
                                                                 monkeypatch) -> None:
    """``sqlite:///rel.db`` is relative to the folder hpo started in: released after a
    ``chdir``, the lock must remove its own file, not the same name in the new folder
    (another study's lock, held)."""
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    monkeypatch.chdir(first)
    storage = optuna.storages.RDBStorage("sqlite:///rel.db")
    try:
        with study_lock(storage, "a"):
            (held,) = first.glob("rel.db.*.lock")
            (second / held.name).touch()  # the same name in the other folder
            monkeypatch.chdir(second)
    finally:
        storage.engine.dispose()
    assert not held.exists()
    assert (second / held.name).exists()


def test_a_lock_file_hpo_cannot_open_is_one_line(tmp_path: Path) -> None:
    """A folder where the lock's name is taken (a folder, a symbolic link: never followed):
    a StorageError that names the file, not a traceback."""
    from hpo.errors import StorageError

    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'hpo.db'}")
    try:
        with study_lock(storage, "a"):
            (name,) = [p.name for p in tmp_path.glob("hpo.db.*.lock")]
        (tmp_path / name).mkdir()
        with pytest.raises(StorageError, match="received a lock file hpo cannot open"):
            with study_lock(storage, "a"):
                pass
        (tmp_path / name).rmdir()
        (tmp_path / name).symlink_to(tmp_path / "elsewhere")
        with pytest.raises(StorageError, match=name):
            with study_lock(storage, "a"):
                pass
        assert not (tmp_path / "elsewhere").exists()
    finally:
        storage.engine.dispose()


@pytest.mark.parametrize("mode", [0o777, 0o755])
def test_a_host_turn_folder_others_can_write_in_or_own_is_refused(tmp_path: Path, monkeypatch,
                                                                  mode: int) -> None:
    import os
    import tempfile

    import sqlalchemy

    from hpo.errors import StorageError
    from hpo.storage._locks import host_turn

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)  # read TMPDIR again
    url = sqlalchemy.engine.make_url("postgresql://user@db.example/hpo")
    with host_turn(url, "study:a"):  # made for this user alone
        pass
    folder = tmp_path / f"hpo-turns-{os.getuid()}"
    assert oct(folder.stat().st_mode & 0o777) == oct(0o700) and not list(folder.iterdir())
    folder.chmod(mode)
    if mode == 0o755:  # not writable by others, but someone else's
        monkeypatch.setattr(os, "getuid", lambda: folder.stat().st_uid + 1)
        folder = folder.rename(tmp_path / f"hpo-turns-{os.getuid()}")
    with pytest.raises(StorageError, match="hpo's host-wide turns"):
        with host_turn(url, "study:a"):
            pass


@pytest.mark.parametrize("raced", [True, False], ids=["point-taken", "nothing-taken"])
def test_a_grid_point_taken_while_the_study_lock_was_cut_runs_once(
        tmp_path: Path, image_folder: Path, postgres_url: str,
        monkeypatch: pytest.MonkeyPatch, raced: bool) -> None:
    """The PostgreSQL study lock ends with its connection. Cut while a worker claims a grid
    point, another worker (of another host) takes the lock and the same point before the
    first has created its trial: the first finds out at the lock's end, gives its trial up
    (FAIL, saying why, before it ran) and takes the next point. Before, both trained the
    point: a grid point COMPLETE twice. When nothing took the point meanwhile, the worker
    keeps its trial."""
    from optuna.trial import TrialState

    from hpo.config import SearchSettings, load_study_config
    from hpo.execution._loop import _TrialSource
    from hpo.storage import open_storage
    from hpo.study import GridClaims, attrs, open_study
    from hpo.testing import write_study

    config = load_study_config(write_study(tmp_path / "g.toml", data=image_folder,
                                           name=f"cut-{tmp_path.name}"))
    ours = open_study(config, open_storage(postgres_url), sampler="grid")
    theirs = open_study(config, open_storage(postgres_url), sampler="grid")
    their_claims = GridClaims(theirs, config, theirs.sampler)
    source = _TrialSource(ours, GridClaims(ours, config, ours.sampler),
                          SearchSettings(study=str(tmp_path / "g.toml")), max_retry=1,
                          run_id=None, recycle_after=None)
    taken_by_them: list[optuna.Trial] = []
    take = GridClaims.take
    cut: list[int] = []

    def take_after_the_cut(claims: GridClaims) -> optuna.Trial:
        if claims is not their_claims and not cut:
            cut.append(cut_advisory_locks(postgres_url))
            if raced:  # the other host's worker
                with another_hosts_lock(theirs._storage, theirs.study_name):
                    assert their_claims.claim(retries=1)
                    taken_by_them.append(take(their_claims))
        return take(claims)

    monkeypatch.setattr(GridClaims, "take", take_after_the_cut)
    mine = source.take()
    assert mine is not None and cut == [1]
    if not raced:  # the point it claimed, and nothing failed
        assert mine.number == 0 and len(ours.get_trials(deepcopy=False)) == 1
        return
    [theirs_first] = taken_by_them
    assert mine.params != theirs_first.params
    trials = ours.get_trials(deepcopy=False)
    given_up = [t for t in trials if t.params == theirs_first.params
                and t.number != theirs_first.number]
    assert [t.state for t in given_up] == [TrialState.FAIL]
    assert given_up[0].system_attrs["hpo:not_run"] is True  # no failure of its point
    assert f"also taken by trial {theirs_first.number}" in \
        given_up[0].user_attrs[attrs.FAIL_REASON]
    import optuna_dashboard  # its dashboard note says why, as every finished trial's

    note = optuna_dashboard.get_note(optuna.trial.Trial(ours, given_up[0]._trial_id))
    assert f"also taken by trial {theirs_first.number}" in note
    counted = [tuple(sorted(t.params.items())) for t in trials if t.state != TrialState.FAIL]
    assert len(counted) == len(set(counted)) == 2  # each point once: theirs, and our next


def test_a_runs_last_trial_taken_while_the_study_lock_was_cut_is_taken_once(
        tmp_path: Path, image_folder: Path, postgres_url: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``n_trials`` is a run's total across its workers, counted under the study lock. Cut
    while one worker takes the run's last trial, another worker of the run takes it too:
    the first gives its trial up (FAIL, saying why, no longer counted) and stops."""
    from optuna.trial import TrialState

    from hpo.config import SearchSettings, load_study_config
    from hpo.execution._loop import _Budget, _TrialSource
    from hpo.storage import open_storage
    from hpo.study import attrs, open_study
    from hpo.testing import write_study

    config = load_study_config(write_study(tmp_path / "r.toml", data=image_folder,
                                           name=f"budget-cut-{tmp_path.name}"))
    search = SearchSettings(study=str(tmp_path / "r.toml"), sampler="random", n_trials=1)
    ours, theirs = (open_study(config, open_storage(postgres_url), sampler="random")
                    for _ in range(2))
    source, their_source = (_TrialSource(study, None, search, max_retry=1, run_id="run",
                                         recycle_after=None) for study in (ours, theirs))
    stamp = _Budget.stamp
    taken_by_them: list[optuna.Trial] = []

    def stamp_after_the_cut(budget: _Budget, trial: optuna.Trial) -> None:
        if budget._study is ours and not taken_by_them:
            assert cut_advisory_locks(postgres_url) == 1
            with monkeypatch.context() as inner:  # the other host's worker
                inner.setattr("hpo.execution._loop.study_lock", another_hosts_lock)
                their = their_source.take()
            assert their is not None
            taken_by_them.append(their)
        stamp(budget, trial)

    monkeypatch.setattr(_Budget, "stamp", stamp_after_the_cut)
    assert source.take() is None  # the run's one trial is theirs
    [their] = taken_by_them
    trials = ours.get_trials(deepcopy=False)
    [given_up] = [t for t in trials if t.number != their.number]
    assert (given_up.state, trials[their.number].state) == (TrialState.FAIL,
                                                            TrialState.RUNNING)
    assert "had taken its n_trials without it" in given_up.user_attrs[attrs.FAIL_REASON]
    assert attrs.RUN_ID not in given_up.system_attrs or \
        given_up.system_attrs[attrs.RUN_ID] is None


def test_of_two_workers_that_took_one_point_the_first_to_check_gives_it_up(
        tmp_path: Path, image_folder: Path) -> None:
    """Both workers lost their study locks and took the same grid point: each checks under
    the lock, and the one that checks first gives its trial up there and then, so the other
    finds it failed and runs the point: once, never twice and never not at all."""
    from optuna.trial import TrialState

    from hpo.config import SearchSettings, load_study_config
    from hpo.execution._loop import _TrialSource
    from hpo.storage import open_storage
    from hpo.study import GridClaims, open_study
    from hpo.testing import write_study

    config = load_study_config(write_study(tmp_path / "g.toml", data=image_folder,
                                           name="twice"))
    url = f"sqlite:///{tmp_path / 'g.db'}"
    studies = [open_study(config, open_storage(url), sampler="grid") for _ in range(2)]
    claims = [GridClaims(study, config, study.sampler) for study in studies]
    assert all(c.claim(retries=1) for c in claims)  # neither saw the other's claim
    first, second = (c.take() for c in claims)
    assert first.params == second.params
    sources = [_TrialSource(study, c, SearchSettings(study=str(tmp_path / "g.toml")),
                            max_retry=1, run_id=None, recycle_after=None)
               for study, c in zip(studies, claims)]
    assert not sources[0]._kept(first)
    assert sources[1]._kept(second)
    states = {t.number: t.state for t in studies[0].get_trials(deepcopy=False)}
    assert states == {first.number: TrialState.FAIL, second.number: TrialState.RUNNING}
