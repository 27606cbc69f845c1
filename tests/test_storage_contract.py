"""Optuna's own storage contract (``optuna.testing.pytest_storages.StorageTestCase``, shipped
in the installed optuna), run against hpo's storage wrapper on SQLite and on PostgreSQL: hpo's
storage must behave exactly like Optuna's stock RDBStorage, which passes the same suite in
Optuna's own CI."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from optuna.testing.pytest_storages import StorageTestCase

from hpo.storage import StorageOptions, close_storage, open_storage


@pytest.fixture(scope="module")
def _postgres_schema() -> Iterator[str]:
    """A URL whose tables live in a fresh PostgreSQL schema (one per test module: creating
    Optuna's tables costs about a second), dropped afterwards."""
    url = os.environ.get("HPO_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("HPO_TEST_POSTGRES_URL is not set (no PostgreSQL server to test against)")
    schema = f"contract_{uuid.uuid4().hex[:10]}"
    admin = sqlalchemy.create_engine(url, isolation_level="AUTOCOMMIT",
                                     poolclass=sqlalchemy.pool.NullPool)
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f"CREATE SCHEMA {schema}"))
    separator = "&" if "?" in url else "?"
    try:
        yield f"{url}{separator}options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@pytest.fixture(scope="module")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An SQLite file with Optuna's tables and nothing in them, made once per test module
    (creating the tables takes most of a contract test's time)."""
    path = tmp_path_factory.mktemp("contract") / "template.db"
    optuna.storages.RDBStorage(f"sqlite:///{path}").engine.dispose()
    return path


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def url(request, tmp_path) -> Iterator[str]:
    """An empty database per test: a copy of the empty SQLite template, or the module's
    PostgreSQL schema with every study of the previous test deleted."""
    if request.param == "sqlite":
        shutil.copyfile(request.getfixturevalue("_sqlite_template"), tmp_path / "contract.db")
        yield f"sqlite:///{tmp_path / 'contract.db'}"
        return
    url = request.getfixturevalue("_postgres_schema")
    yield url
    cleaner = optuna.storages.RDBStorage(url)
    for study in cleaner.get_all_studies():
        cleaner.delete_study(study._study_id)
    cleaner.engine.dispose()


class TestHpoStorage(StorageTestCase):
    """hpo's storage as ``hpo run`` opens it (outage-riding, creation tokens, heartbeats)."""

    @pytest.fixture
    def storage(self, url):
        opened = open_storage(url, StorageOptions())
        yield opened
        close_storage(opened)


def test_hpo_storage_is_what_the_layers_above_may_ask_of_a_storage(tmp_path):
    """The typed protocol: hpo's RDB storage (and the cache Optuna wraps it in) answers as
    an HpoStorage with heartbeats; a journal file is neither, and every caller then does
    without (no heartbeat thread, no tokens to forget, records written at once)."""
    from hpo.storage import Heartbeats, HpoStorage, heartbeats, hpo_storage

    storage = open_storage(f"sqlite:///{tmp_path / 'c.db'}", StorageOptions(heartbeat_interval=7))
    journal = open_storage(f"journal:///{tmp_path / 'c.log'}")
    try:
        study = optuna.create_study(storage=storage)
        from hpo.storage import storage_of

        for each in (storage, storage_of(study)):
            assert isinstance(hpo_storage(each), HpoStorage)
        beating = heartbeats(storage_of(study))
        assert isinstance(beating, Heartbeats) and beating.get_heartbeat_interval() == 7
        assert hpo_storage(journal) is None and heartbeats(journal) is None
    finally:
        close_storage(storage)


def test_no_layer_above_storage_probes_a_storage_or_digs_into_a_study():
    """study/, trial/, execution/ (and above) reach hpo's storage through the typed
    protocol and hpo.storage's functions: no getattr probe of a storage, no
    ``unwrap_storage``, no ``Study._storage``."""
    import re
    from pathlib import Path

    import hpo

    root = Path(hpo.__file__).parent
    found = []
    for path in sorted(root.rglob("*.py")):
        if path.relative_to(root).parts[0] in ("storage", "testing.py"):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"unwrap_storage|\._storage\b|getattr\([^)]*storage", line):
                found.append(f"{path.relative_to(root)}:{number}: {line.strip()}")
    assert not found, "\n".join(found)
