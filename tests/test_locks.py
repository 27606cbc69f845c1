"""The study lock's files: exclusive across processes, and gone once released."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from hpo.storage import study_lock

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
