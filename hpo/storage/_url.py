"""The storage URL's dialect and form, checked before anything is opened: a near miss
(``postgres://``, ``sqlite://hpo.db``, ``sqllite:``) is refused with the URL that was meant.

hpo stores studies in SQLite (``sqlite:///file.db``), PostgreSQL
(``postgresql[+driver]://user:password@host/db``), MySQL (``mysql[+driver]://...``) or an
Optuna journal file (``journal:///file.log``).
"""

from __future__ import annotations

import difflib
import re

from hpo.errors import StorageError

__all__ = ["DIALECTS", "check_storage_url"]

#: The databases hpo stores studies in (a driver may follow a '+', e.g. postgresql+psycopg).
DIALECTS: tuple[str, ...] = ("sqlite", "postgresql", "mysql", "journal")

#: Spellings other tools use for a dialect hpo knows.
_ALIASES: dict[str, str] = {
    "postgres": "postgresql", "psql": "postgresql", "pg": "postgresql", "pgsql": "postgresql",
    "postgre": "postgresql", "sqlite3": "sqlite", "mariadb": "mysql",
}

_EXPECTED = ("expected sqlite:///file.db, postgresql://user:password@host/db, "
             "mysql+pymysql://user:password@host/db or journal:///file.log")

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*")


def _refuse(url: str, problem: str, fix: str | None) -> StorageError:
    from hpo.storage._open import mask_url

    shown = mask_url(url)
    if fix is not None:
        return StorageError(f"storage {shown!r}: {problem}; did you mean {mask_url(fix)!r}?")
    return StorageError(f"storage {shown!r}: {problem}; {_EXPECTED}")


def check_storage_url(url: str) -> None:
    """Refuses a storage URL whose dialect hpo does not store in, or whose form is a near
    miss of a valid one, with the URL that was meant where it can tell.

    Raises:
        StorageError: One line: what is wrong, and the fix.
    """
    if url != url.strip():
        raise _refuse(url, "has spaces or a line break around it", url.strip())
    scheme, sep, rest = url.partition(":")
    if not sep or not _SCHEME.fullmatch(scheme) or len(scheme) == 1:  # C:\... is a path
        fix = f"sqlite:///{url}" if url.endswith((".db", ".sqlite", ".sqlite3")) else None
        raise _refuse(url, "is not a URL", fix)
    dialect, plus, driver = scheme.partition("+")
    known = dialect.lower()
    if known not in DIALECTS:
        meant = _ALIASES.get(known) or next(iter(difflib.get_close_matches(
            known, DIALECTS, n=1, cutoff=0.6)), None)
        fix = None
        if meant is not None:
            slashes = rest if rest.startswith("//") else "//" + rest.lstrip("/")
            if meant == "sqlite" and not slashes.startswith("///"):
                slashes = "///" + slashes.lstrip("/")
            fix = f"{meant}{plus}{driver if meant != 'sqlite' else ''}:{slashes}"
            fix = fix.replace("sqlite+:", "sqlite:")
        raise _refuse(url, f"unknown database {dialect!r}", fix)
    if known != dialect:
        raise _refuse(url, "dialect names are lower case", known + plus + driver + ":" + rest)
    if known == "journal" and plus:
        raise _refuse(url, "a journal storage takes no driver", "journal:" + rest)
    if plus and not re.fullmatch(r"[a-z0-9_]+", driver):
        raise _refuse(url, f"expected a driver name after '+', received {driver!r}",
                      None if driver else f"{dialect}:{rest}")
    if not rest.startswith("//"):
        body = rest.lstrip("/")
        if known == "sqlite":
            fix = f"{scheme}:///{body}"
        elif known == "journal":
            fix = f"journal://{rest}"
        else:
            fix = f"{scheme}://{body}"
        raise _refuse(url, "a URL has '//' after the scheme", fix)
    after = rest[2:]
    if known == "sqlite" and after and not after.startswith(("/", "?")):
        # sqlite://hpo.db reads 'hpo.db' as a host, and names no file: a relative path
        # needs three slashes, an absolute one four
        raise _refuse(url, "a file path needs three slashes after sqlite: (four for an "
                           "absolute path)", f"{scheme}:///{after}")
