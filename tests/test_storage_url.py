"""The storage URL's dialect and form (hpo/storage/_url.py): what hpo stores in passes, a
near miss is refused in one line with the URL that was meant, before anything is opened."""

from __future__ import annotations

import pytest

from hpo.errors import StorageError
from hpo.storage import check_storage_url, open_storage
from tests.conftest import run_here


@pytest.mark.parametrize("url", [
    "sqlite:///hpo.db", "sqlite:////abs/hpo.db", "sqlite+pysqlite:///hpo.db",
    "postgresql://user:pw@host/db", "postgresql+psycopg://host:5432/db", "postgresql:///db",
    "mysql://host/db", "mysql+pymysql://user@host/db", "journal:///tmp/study.log",
    "sqlite://", "sqlite:///:memory:",  # in memory: refused by open_storage, said there
])
def test_the_dialects_hpo_stores_in_pass(url):
    check_storage_url(url)


@pytest.mark.parametrize("url,meant", [
    ("postgres://user:secret@host/db", "postgresql://user:***@host/db"),
    ("postgres+psycopg://host/db", "postgresql+psycopg://host/db"),
    ("psql://host/db", "postgresql://host/db"),
    ("pgsql://host/db", "postgresql://host/db"),
    ("postgresql:/host/db", "postgresql://host/db"),
    ("postgresql:host/db", "postgresql://host/db"),
    ("sqlite://hpo.db", "sqlite:///hpo.db"),
    ("sqlite:hpo.db", "sqlite:///hpo.db"),
    ("sqllite:///hpo.db", "sqlite:///hpo.db"),
    ("sqlite3:///hpo.db", "sqlite:///hpo.db"),
    ("SQLite:///hpo.db", "sqlite:///hpo.db"),
    ("hpo.db", "sqlite:///hpo.db"),
    (" sqlite:///hpo.db\n", "sqlite:///hpo.db"),
    ("mysq://host/db", "mysql://host/db"),
    ("journal:study.log", "journal://study.log"),
    ("journal+x:///study.log", "journal:///study.log"),
])
def test_a_near_miss_is_refused_with_the_url_meant(url, meant):
    with pytest.raises(StorageError) as caught:
        check_storage_url(url)
    message = str(caught.value)
    assert "\n" not in message and message.endswith(f"did you mean {meant!r}?"), message
    assert "secret" not in message


@pytest.mark.parametrize("url", ["http://host/db", "mongodb://host/db", "notaurl",
                                 "mysql+a-b:///x", "redis://host"])
def test_an_unknown_dialect_lists_the_supported_ones(url):
    with pytest.raises(StorageError, match="expected sqlite:///file.db, postgresql://"):
        check_storage_url(url)


def test_open_storage_checks_the_url_before_anything_is_made(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StorageError, match="did you mean 'sqlite:///hpo.db'"):
        open_storage("sqlite://hpo.db")
    assert list(tmp_path.iterdir()) == []


def test_the_cli_says_the_fix_in_one_line_before_any_trial(tmp_path):

    result = run_here("run", "--study", "demo", "--storage", "postgres://u:pw@127.0.0.1/x",
                      cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "hpo: error: storage 'postgres://u:***@127.0.0.1/x': unknown database 'postgres'; "
        "did you mean 'postgresql://u:***@127.0.0.1/x'?")
