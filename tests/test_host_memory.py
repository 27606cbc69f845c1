"""glibc keeps freed memory for the next training step (hpo.trial._device.keep_freed_memory;
BENCHMARKS.md, "Host memory")."""

from __future__ import annotations

import platform

import pytest

from hpo.trial._device import keep_freed_memory


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only")
def test_glibc_takes_the_top_pad():
    assert keep_freed_memory() is True  # mallopt accepted it
    assert keep_freed_memory() is True  # and again: a worker's every warm-up may ask

