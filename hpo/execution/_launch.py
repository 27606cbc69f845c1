"""Many workers on one study: one process per GPU (or per CPU share), supervised.

Each worker is a plain ``hpo worker`` process: the same command a job scheduler (a Slurm
array, a Kubernetes Job) runs on other hosts against the same PostgreSQL study. The storage
URL reaches the workers through the ``HPO_STORAGE`` environment variable, never their
command line, so a password never shows in ``ps``.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass

from hpo.errors import ConfigError

__all__ = ["WorkerSpec", "plan_workers", "launch_workers"]

_log = logging.getLogger("hpo.workers")


@dataclass(frozen=True)
class WorkerSpec:
    """One worker process to start.

    Attributes:
        name: Recorded with each trial it runs (``gpu0``, ``cpu1``, ...).
        env: Environment variables set for it (``CUDA_VISIBLE_DEVICES``).
    """

    name: str
    env: dict[str, str]


def _all_gpus() -> list[str]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        return [g.strip() for g in visible.split(",") if g.strip()]
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    listing = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30)
    return [str(i) for i, line in enumerate(listing.stdout.splitlines())
            if line.startswith("GPU ")]


def plan_workers(*, workers: int, gpus: str | None) -> list[WorkerSpec]:
    """One spec per worker: per GPU of ``gpus`` (``0,1,2`` or ``all``), else ``workers`` CPU ones.

    Raises:
        ConfigError: ``gpus`` names no GPU, or ``workers`` is below 1.
    """
    if gpus is not None:
        ids = _all_gpus() if gpus == "all" else [g.strip() for g in gpus.split(",") if g.strip()]
        if not ids:
            raise ConfigError(f"--gpus {gpus} found no GPU (nvidia-smi lists none and "
                              "CUDA_VISIBLE_DEVICES is unset); pass ids like --gpus 0,1 or "
                              "use --workers N for CPU workers")
        if not all(g.isdigit() for g in ids):
            raise ConfigError(f"--gpus expects 'all' or GPU ids like 0,1,2; received {gpus!r}")
        return [WorkerSpec(name=f"gpu{g}", env={"CUDA_VISIBLE_DEVICES": g,
                                                "TF_FORCE_GPU_ALLOW_GROWTH": "true",
                                                "XLA_PYTHON_CLIENT_PREALLOCATE": "false"})
                for g in ids]
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, received {workers}")
    threads = str(max(1, (os.cpu_count() or 1) // workers))
    return [WorkerSpec(name=f"cpu{i}", env={"TF_NUM_INTRAOP_THREADS": threads,
                                            "OMP_NUM_THREADS": threads})
            for i in range(workers)]


def launch_workers(specs: list[WorkerSpec], argv: list[str], storage: str) -> int:
    """Starts ``hpo worker ARGV --worker-name NAME`` per spec and waits for all of them.

    Ctrl-C reaches the workers directly (same process group): each marks its running trial
    FAIL and exits; SIGTERM to this process is passed on to them as SIGINT.

    Returns:
        0 when every worker succeeded, else the first non-zero exit status.
    """
    procs: list[subprocess.Popen[bytes]] = []
    for spec in specs:
        env = {**os.environ, **spec.env, "HPO_STORAGE": storage}
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "hpo", "worker", *argv, "--worker-name", spec.name],
            env=env))

    def forward(signum: int, frame: object) -> None:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)

    previous = signal.signal(signal.SIGTERM, forward)
    codes: list[int] = []
    try:
        for proc in procs:
            while True:
                try:
                    codes.append(proc.wait())
                    break
                except KeyboardInterrupt:
                    continue  # the workers got the same Ctrl-C: wait for them to finish
    finally:
        signal.signal(signal.SIGTERM, previous)
    return next((c for c in codes if c != 0), 0)
