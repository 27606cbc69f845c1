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
