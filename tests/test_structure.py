"""The layout shows the pipeline and keeps its rules (README, "Layout")."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUBPACKAGES = ("config", "data", "search", "storage", "study", "trial", "reporting",
               "execution", "cli")


def test_the_layers_hold_and_typer_stays_in_the_cli():
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)  # no cache folder left in the checkout
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize("name", SUBPACKAGES)
def test_each_subpackage_exports_an_explicit_api_over_private_modules(name):
    package = importlib.import_module(f"hpo.{name}")
    assert package.__doc__, f"hpo.{name} says what it is for"
    assert package.__all__, f"hpo.{name} has an explicit __all__"
    for exported in package.__all__:
        assert getattr(package, exported) is not None
    modules = [p.stem for p in (ROOT / "hpo" / name).glob("*.py")
               if p.stem not in ("__init__", "__main__")]
    assert modules and all(m.startswith("_") for m in modules), modules


def test_the_wheel_lists_every_subpackage():
    declared = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
                   ["packages"])
    on_disk = {".".join(p.parent.relative_to(ROOT).parts)
               for p in (ROOT / "hpo").rglob("__init__.py")}
    assert declared == on_disk | {"hpo._studies"}


def test_importing_hpo_loads_no_backend():
    """Nor ml_dtypes: its import alone is 1.4 s of CPU, which every command that trains
    nothing would pay (``hpo studies`` took 3.4 s with it, 1.4 s without)."""
    code = ("import sys, hpo, hpo.cli, hpo.config, hpo.data, hpo.search, hpo.storage, "
            "hpo.study, hpo.trial, hpo.reporting, hpo.execution; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'keras', 'tensorflow', 'jax', 'sklearn', 'matplotlib', 'ml_dtypes'}))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, check=True)
    assert result.stdout.strip() == "[]"


def test_an_installed_wheel_finds_the_shipped_studies(tmp_path):
    # Built from a copy of what the wheel is made of: setuptools writes build/ and
    # hpo.egg-info/ beside the pyproject.toml it builds, and the checkout keeps neither.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for name in ("hpo", "studies"):
        shutil.copytree(ROOT / name, source / name,
                        ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                            str(tmp_path / "dist"), str(source)], capture_output=True,
                           text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    wheel = next((tmp_path / "dist").glob("hpo-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    shipped = {p.name for p in (ROOT / "studies").glob("*.toml")}
    assert {f"hpo/_studies/{n}" for n in shipped} <= names
    assert "hpo/py.typed" in names  # PEP 561: a user's type checker reads hpo's types
    # Unpacked as an installer would, hpo finds them without the checkout.
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    code = ("import hpo.config as c; print(c.BUNDLED_STUDIES_DIR); "
            "print(c.load_study_config('firearms').grid_size)")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120, env={"PYTHONPATH": str(site),
                                                         "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    where, size = result.stdout.split()
    assert Path(where) == site / "hpo" / "_studies"
    assert size == "384"


def test_every_run_setting_can_be_named_in_a_message():
    """A message names a setting as ``$name``; only names hpo.errors knows are rendered (as
    a flag on the command line), so every run setting must be among them."""
    from hpo.config import SETTING_NAMES
    from hpo.errors import SETTINGS

    assert set(SETTING_NAMES) <= SETTINGS
