"""glibc keeps freed memory for the next training step in hpo's own processes
(hpo.trial.keep_freed_memory; BENCHMARKS.md, section 15)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

_GLIBC = platform.libc_ver()[0] == "glibc"
_PROBE = "from hpo.trial import keep_freed_memory; print(keep_freed_memory())"


def _probe(**env: str) -> str:
    clean = {k: v for k, v in os.environ.items()
             if not (k.startswith("MALLOC_") or k == "GLIBC_TUNABLES")}
    done = subprocess.run([sys.executable, "-c", _PROBE], env={**clean, **env},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.skipif(not _GLIBC, reason="glibc's mallopt only")
def test_glibc_takes_every_setting():
    assert _probe() == "True"


@pytest.mark.skipif(not _GLIBC, reason="glibc's mallopt only")
@pytest.mark.parametrize("env", [{"MALLOC_ARENA_MAX": "4"},
                                 {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=0"}])
def test_malloc_settings_of_the_user_win(env):
    assert _probe(**env) == "False"


def test_the_readme_gives_the_same_settings_as_glibc_variables():
    """README ("Performance") tells `hpo.run` users the variables that set what hpo's own
    processes set: the same four values as ``_MALLOPT``."""
    from pathlib import Path

    from hpo.trial._device import _MALLOPT

    names = {-8: "MALLOC_ARENA_MAX", -4: "MALLOC_MMAP_MAX_", -1: "MALLOC_TRIM_THRESHOLD_",
             -2: "MALLOC_TOP_PAD_"}  # glibc's variable for each mallopt parameter
    readme = " ".join((Path(__file__).resolve().parents[1] / "README.md").read_text().split())
    told = " ".join(f"{names[parameter]}={value}" for parameter, value in _MALLOPT)
    assert f"`{told}`" in readme
