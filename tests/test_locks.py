"""The study lock's files: exclusive across processes, and gone once released."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna

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
