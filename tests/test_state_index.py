"""hpo's one addition to Optuna's schema, an index of trials by (study, state): created once,
safely by workers starting together, skipped (not fatal) where the database user may not
create it, and invisible to stock Optuna: load_study, the optuna CLI (``optuna storage
upgrade`` from an older schema included) and hpo itself keep working on the database."""

from __future__ import annotations

import subprocess
import sys
import threading
import uuid
from pathlib import Path

import optuna
import pytest
import sqlalchemy

from hpo.storage import STATE_INDEX, close_storage, open_storage

OPTUNA_CLI = str(Path(sys.executable).with_name("optuna"))


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_url(request, tmp_path, postgres_url_or_none):
    """A new, empty database: a SQLite file, or a database made on the PostgreSQL server."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'index.db'}"
        return
    if postgres_url_or_none is None:
        pytest.skip("HPO_TEST_POSTGRES_URL is not set (no PostgreSQL server to test against)")
    name = f"hpo_index_{uuid.uuid4().hex[:8]}"
    admin = sqlalchemy.create_engine(postgres_url_or_none, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    try:
        yield postgres_url_or_none.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture()
def postgres_url_or_none():
    import os

    return os.environ.get("HPO_TEST_POSTGRES_URL")


def _indexes(url: str) -> list[str]:
    engine = sqlalchemy.create_engine(url)
    try:
        return [index["name"] for index in sqlalchemy.inspect(engine).get_indexes("trials")]
    finally:
        engine.dispose()


def test_workers_opening_together_make_the_index_once(fresh_url):
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            close_storage(open_storage(fresh_url))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert _indexes(fresh_url).count(STATE_INDEX) == 1
    close_storage(open_storage(fresh_url))  # and again: nothing to do
    assert _indexes(fresh_url).count(STATE_INDEX) == 1


def test_stock_optuna_its_cli_and_a_schema_upgrade_work_with_the_index(fresh_url):
    storage = open_storage(fresh_url)
    study = optuna.create_study(study_name="indexed", storage=storage)
    for value in (0.1, 0.2, 0.3):
        study.add_trial(optuna.create_trial(value=value))
    study.enqueue_trial({"x": 1.0})
    close_storage(storage)
    # The schema of the Optuna release before the last migration, hpo's index in place:
    # that migration indexes trials.study_id, so its index goes and the version goes back
    # one (Optuna's own downgrade expects the index under another name). Then the optuna
    # CLI upgrades it, as a user would after upgrading Optuna.
    from alembic.script import ScriptDirectory

    stock = optuna.storages.RDBStorage(fresh_url, skip_compatibility_check=True)
    head = stock.get_current_version()
    scripts = ScriptDirectory.from_config(stock._version_manager._create_alembic_config())
    previous = scripts.get_revision(head).down_revision
    with stock.engine.begin() as connection:
        connection.execute(sqlalchemy.text("DROP INDEX ix_trials_study_id"))
        connection.execute(sqlalchemy.text("UPDATE alembic_version SET version_num = :v"),
                           {"v": previous})
    assert stock.get_current_version() == previous
    stock.engine.dispose()
    upgraded = subprocess.run([OPTUNA_CLI, "storage", "upgrade", "--storage", fresh_url],
                              capture_output=True, text=True, timeout=300)
    assert upgraded.returncode == 0, upgraded.stderr
    listed = subprocess.run([OPTUNA_CLI, "trials", "--study-name", "indexed", "--storage",
                             fresh_url, "-f", "json"], capture_output=True, text=True,
                            timeout=300)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.count('"number"') == 4
    loaded = optuna.load_study(study_name="indexed", storage=fresh_url)
    assert [t.value for t in loaded.trials[:3]] == [0.1, 0.2, 0.3]
    assert loaded.ask().params == {} and loaded.trials[3].params == {}  # the queued one
    storage = open_storage(fresh_url)  # hpo again, after the upgrade
    assert optuna.storages.RDBStorage(fresh_url).get_current_version() == head
    assert _indexes(fresh_url).count(STATE_INDEX) == 1
    close_storage(storage)


def test_a_user_who_may_not_create_the_index_still_opens_the_study(tmp_path, caplog):
    path = tmp_path / "readonly.db"
    url = f"sqlite:///{path}"
    storage = open_storage(url)
    optuna.create_study(study_name="kept", storage=storage).add_trial(
        optuna.create_trial(value=0.5))
    close_storage(storage)
    engine = sqlalchemy.create_engine(url)
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text(f'DROP INDEX "{STATE_INDEX}"'))
    engine.dispose()
    read_only = f"sqlite:///file:{path}?mode=ro&uri=true"  # as a read-only role would be
    with caplog.at_level("INFO", logger="hpo.storage"):
        storage = open_storage(read_only)
    assert optuna.load_study(study_name="kept", storage=storage).trials[0].value == 0.5
    close_storage(storage)
    assert STATE_INDEX not in _indexes(url)
    assert any("without hpo's index" in r.getMessage() for r in caplog.records)
