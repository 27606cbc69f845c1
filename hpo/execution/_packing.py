"""Several trials on one GPU: how many fit, and each worker held to its share of memory.

``--trials-per-gpu K`` starts K workers per GPU (named ``gpu0.0``, ``gpu0.1``, ...), each
limited to ``0.9 / K`` of the GPU's memory: JAX through ``XLA_PYTHON_CLIENT_MEM_FRACTION``
(with preallocation off, the fraction is the ceiling its allocator grows to), TensorFlow
through a logical-device memory limit that hpo sets before TensorFlow touches the GPU
(``HPO_GPU_MEMORY_SHARE``, read by :func:`hpo.trial.configure_gpus`). A worker that needs
more than its share fails its trial with an out-of-memory error; it never takes memory from
the others.

``--trials-per-gpu auto`` takes K from what the study measured: the largest peak GPU memory
a trial recorded (``gpu_peak_memory_mb``), with 20 % headroom, against the GPU's total and
free memory (NVML, else ``nvidia-smi``). With nothing measured yet it runs one trial per
GPU and says so: the next run packs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

__all__ = ["MEMORY_SHARE_ENV", "Packing", "memory_env", "plan_packing"]

#: The share of a GPU's memory a packed TensorFlow worker may use (``0.45``).
MEMORY_SHARE_ENV = "HPO_GPU_MEMORY_SHARE"
_USABLE = 0.9  # of a GPU's memory, for all its workers together (the rest: CUDA, drivers)
_HEADROOM = 1.2  # a worker's share is at least this many times the measured peak


@dataclass(frozen=True)
class Packing:
    """How many workers per GPU, and why (one line for the log)."""

    per_gpu: int
    why: str


def memory_env(per_gpu: int) -> dict[str, str]:
    """Environment of a worker that shares its GPU with ``per_gpu - 1`` others."""
    env = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    if per_gpu == 1:
        env["TF_FORCE_GPU_ALLOW_GROWTH"] = "true"
        return env
    share = f"{_USABLE / per_gpu:.4f}"
    env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = share
    env[MEMORY_SHARE_ENV] = share
    return env


def plan_packing(requested: int | str, gpus: list[str], peaks_mb: Iterable[float],
                 memory: dict[str, tuple[float, float] | None]) -> Packing:
    """Workers per GPU for ``--trials-per-gpu requested`` (a number, or ``auto``).

    Args:
        requested: K, or ``"auto"``.
        gpus: The GPU ids the workers run on.
        peaks_mb: Peak GPU memory the study's trials recorded, MiB.
        memory: GPU id -> (free, total) MiB, or None when unknown.
    """
    if requested != "auto":
        return Packing(int(requested), f"{requested} per GPU, as asked")
    peak = max(peaks_mb, default=None)
    if peak is None:
        return Packing(1, "1 per GPU: no trial of this study has measured its GPU memory "
                          "yet; --trials-per-gpu auto packs once one has")
    known = [m for m in (memory.get(g) for g in gpus) if m is not None]
    if len(known) < len(gpus):
        return Packing(1, "1 per GPU: the GPUs' memory cannot be read (no NVML, no "
                          "nvidia-smi)")
    need = peak * _HEADROOM
    by_total = min(math.floor(_USABLE * total / need) for _, total in known)
    by_free = min(math.floor(free / need) for free, _ in known)
    per_gpu = max(1, min(by_total, by_free))
    return Packing(per_gpu, f"{per_gpu} per GPU: a trial peaked at {peak:,.0f} MiB (x "
                            f"{_HEADROOM} headroom); least free GPU memory "
                            f"{min(f for f, _ in known):,.0f} MiB")
