"""Every Optuna internal hpo uses is still there, with the parameters hpo passes.

hpo reaches into Optuna's private API (its storage's sessions and table models, the trial
cache, a study's storage and ids: see ``hpo/storage/_optuna.py``). The list of those symbols,
``OPTUNA_INTERNALS``, is checked one by one against the installed Optuna, so that a release
that drops or renames one fails here naming it (not somewhere in the middle of a study).
A scan of hpo/ keeps the list complete: a private name of Optuna used in hpo but missing
from the list fails too. CI runs this file against the lowest supported Optuna as well.
"""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path
from typing import Any

import optuna
import pytest

from hpo.storage._optuna import OPTUNA_INTERNALS

HPO = Path(__file__).resolve().parents[1] / "hpo"


def _instances(tmp_path: Path) -> dict[str, Any]:
    """An object of each class whose instance attributes hpo reads, keyed as in the list."""
    from optuna.storages._cached_storage import _CachedStorage
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    rdb = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'internals.db'}")
    study = optuna.create_study(storage=optuna.storages.InMemoryStorage())
    trial = study.ask()
    study.tell(trial, 1.0)
    backend = JournalFileBackend(str(tmp_path / "journal.log"))
    return {
        "optuna.study:Study": study,
        "optuna.trial:Trial": trial,
        "optuna.trial:FrozenTrial": study.trials[0],
        "optuna.storages.journal:JournalStorage": JournalStorage(backend),
        "optuna.storages.journal:JournalFileBackend": backend,
        "optuna.storages._cached_storage:_CachedStorage": _CachedStorage(rdb),
        "optuna.storages._rdb.storage:RDBStorage": rdb,
    }


def _parse(entry: str) -> tuple[str, list[str], list[str] | None]:
    """``module:a.b#c.d(x, y)`` -> (``module:a.b``, the attribute path after '#' or the
    qualified name's remainder, the parameters or None)."""
    params = None
    if entry.endswith(")"):
        entry, _, inside = entry[:-1].partition("(")
        params = [p.strip() for p in inside.split(",") if p.strip()]
    return entry, entry.partition(":")[2].replace("#", ".").split("."), params


@pytest.fixture(scope="module")
def instances(tmp_path_factory) -> dict[str, Any]:
    return _instances(tmp_path_factory.mktemp("internals"))


def test_the_optuna_under_test_is_the_one_ci_asked_for():
    """CI runs this file once more against the lowest supported Optuna
    (HPO_EXPECT_OPTUNA=4.9.0, installed into a folder at the front of PYTHONPATH): that run
    must really import that version, not the newest one of the main install."""
    import os

    expected = os.environ.get("HPO_EXPECT_OPTUNA")
    print(f"optuna {optuna.__version__} from {optuna.__file__}")
    if expected is not None:
        assert optuna.__version__ == expected, optuna.__file__


@pytest.mark.parametrize("entry", OPTUNA_INTERNALS)
def test_an_optuna_internal_hpo_uses_is_still_there(entry, instances):
    where, path, params = _parse(entry)
    module_name, _, qualname = where.partition(":")
    try:
        found: Any = importlib.import_module(module_name)
    except ImportError:
        pytest.fail(f"Optuna {optuna.__version__} has no module {module_name} "
                    f"(hpo uses {entry})")
    if "#" in qualname:
        cls, _, _ = qualname.partition("#")
        found = instances[f"{module_name}:{cls}"]
        path = qualname.partition("#")[2].split(".")
    for name in path:
        if not hasattr(found, name):
            pytest.fail(f"Optuna {optuna.__version__} has no {name} in {entry} (hpo uses it)")
        found = getattr(found, name)
    if params is not None:
        actual = list(inspect.signature(found).parameters)
        assert actual[:len(params)] == params, (
            f"Optuna {optuna.__version__}: {where} takes ({', '.join(actual)}); hpo passes or "
            f"overrides ({', '.join(params)})")


def _private_uses() -> set[str]:
    """Private names of Optuna that hpo's code uses: private modules and names imported from
    Optuna, underscore attributes read off anything but ``self``/``cls``, attributes of
    Optuna's table models, and RDBStorage/_CachedStorage private methods hpo overrides."""
    from optuna.storages import RDBStorage
    from optuna.storages._cached_storage import _CachedStorage

    inherited = {n for c in (RDBStorage, _CachedStorage) for n in vars(c)
                 if n.startswith("_") and not n.startswith("__")}
    used: set[str] = set()
    for path in HPO.rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("optuna"):
                if any(part.startswith("_") for part in node.module.split(".")):
                    used.add(node.module)
                used.update(a.name for a in node.names if a.name.startswith("_"))
            elif isinstance(node, ast.Attribute):
                base = node.value
                if isinstance(base, ast.Name) and base.id == "models":
                    used.add(f"models:{node.attr}")
                elif isinstance(base, ast.Attribute) and isinstance(base.value, ast.Name) \
                        and base.value.id == "models":
                    used.add(f"models:{base.attr}.{node.attr}")
                elif node.attr.startswith("_") and not node.attr.startswith("__") and not (
                        isinstance(base, ast.Name) and base.id in ("self", "cls", "os")):
                    used.add(node.attr)
            elif isinstance(node, ast.FunctionDef) and node.name in inherited:
                used.add(node.name)
    return used


def test_the_list_names_every_private_optuna_symbol_hpo_uses():
    listed = " ".join(OPTUNA_INTERNALS)
    tokens = {t for entry in OPTUNA_INTERNALS
              for t in entry.replace("(", " ").replace(":", " ").replace("#", " ")
              .replace(".", " ").split()}
    missing = []
    for name in sorted(_private_uses()):
        if name.startswith("models:"):
            if f"_rdb.{name}" not in listed:
                missing.append(name)
        elif name.startswith("optuna."):
            if name not in listed:
                missing.append(name)
        elif name not in tokens:
            missing.append(name)
    assert not missing, f"hpo uses Optuna internals missing from OPTUNA_INTERNALS: {missing}"
