"""What a trial did with its accelerator: images per second, seconds outside ``fit``, and on
an NVIDIA GPU its busy share and peak memory, recorded as user attributes.

GPU busy % is NVIDIA's utilization counter (the share of time a kernel ran), sampled while
``fit`` runs, through NVML (the ``nvidia-ml-py`` package), else ``nvidia-smi``. It counts the
whole device: trials packed on one GPU (``--trials-per-gpu``) see each other's work. Peak
memory is the backend's own count for this process (TensorFlow's is reset per trial; JAX's
is the process's peak so far). Without a GPU nothing GPU-related is recorded, never a
made-up figure.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import threading
from typing import Any, Callable

__all__ = ["GpuMonitor", "utilization_reader", "peak_memory_bytes", "reset_peak_memory",
           "gpu_memory_mb", "visible_device"]

_log = logging.getLogger(__name__)


def visible_device() -> str:
    """The GPU this process trains on, as NVML knows it: the first of
    ``CUDA_VISIBLE_DEVICES`` (an index or a UUID), else index 0."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    return visible or "0"


def _nvml(device: str) -> tuple[Any, Any] | None:
    """(the ``pynvml`` module, the handle of GPU ``device`` or None when NVML has no such
    GPU or no driver), or None when nvidia-ml-py is not installed."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        return pynvml, (pynvml.nvmlDeviceGetHandleByIndex(int(device)) if device.isdigit()
                        else pynvml.nvmlDeviceGetHandleByUUID(device))
    except pynvml.NVMLError:  # no driver, no such GPU
        return pynvml, None


def utilization_reader() -> Callable[[], float] | None:
    """A function returning the training GPU's busy % now, or None when no NVIDIA GPU
    answers (no driver, no GPU, neither NVML nor nvidia-smi)."""
    device = visible_device()
    nvml = _nvml(device)
    if nvml is not None:
        pynvml, handle = nvml
        if handle is None:
            return None

        def read_nvml() -> float:
            try:
                return float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
            except pynvml.NVMLError as exc:
                raise OSError(str(exc)) from exc

        return read_nvml
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    command = [smi, "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
               "-i", device]

    def read() -> float:
        return float(subprocess.run(command, capture_output=True, text=True, check=True,
                                    timeout=5).stdout.split()[0])

    try:
        read()
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
        return None
    return read


def gpu_memory_mb(device: str) -> tuple[float, float] | None:
    """(free, total) MiB of GPU ``device`` (an index or UUID), or None when unknown."""
    nvml = _nvml(device)
    if nvml is not None:
        pynvml, handle = nvml
        if handle is None:
            return None
        try:
            info = pynvml.nvmlDeviceGetMemoryInfo(handle)
        except pynvml.NVMLError:
            return None
        return info.free / 2**20, info.total / 2**20
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run([smi, "--query-gpu=memory.free,memory.total",
                              "--format=csv,noheader,nounits", "-i", device],
                             capture_output=True, text=True, check=True, timeout=10).stdout
        free, total = (float(v) for v in out.split(",")[:2])
    except (OSError, ValueError, subprocess.SubprocessError):
        return None
    return free, total


def reset_peak_memory() -> None:
    """Starts a new peak-memory count where the backend allows it (TensorFlow)."""
    from hpo.trial._device import backend

    if backend() == "tensorflow":
        import tensorflow as tf

        if tf.config.list_logical_devices("GPU"):
            tf.config.experimental.reset_memory_stats("GPU:0")


def peak_memory_bytes() -> int | None:
    """Peak GPU memory this process used (see the module's note), or None without a GPU."""
    from hpo.trial._device import backend

    name = backend()
    if name == "tensorflow":
        import tensorflow as tf

        if tf.config.list_logical_devices("GPU"):
            return int(tf.config.experimental.get_memory_info("GPU:0")["peak"])
    elif name == "jax":
        import jax

        for device in jax.local_devices():
            if device.platform == "gpu":
                stats = device.memory_stats() or {}
                if "peak_bytes_in_use" in stats:
                    return int(stats["peak_bytes_in_use"])
    return None


class GpuMonitor:
    """Samples the GPU's busy % in a thread while ``fit`` runs (a context manager).

    Args:
        reader: What :func:`utilization_reader` returned (None: no GPU, nothing sampled).
        interval: Seconds between samples.
    """

    def __init__(self, reader: Callable[[], float] | None, interval: float = 0.5) -> None:
        self._reader = reader
        self._interval = interval
        self._samples: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> GpuMonitor:
        if self._reader is not None:
            self._thread = threading.Thread(target=self._sample, name="hpo-gpu-monitor",
                                            daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _sample(self) -> None:
        assert self._reader is not None
        while not self._stop.wait(self._interval):
            try:
                self._samples.append(self._reader())
            except (OSError, ValueError, subprocess.SubprocessError) as exc:
                _log.debug("GPU utilization not read: %s", exc)

    def facts(self) -> dict[str, Any]:
        """``gpu_busy_pct`` (mean of the samples) when any was taken."""
        if not self._samples:
            return {}
        return {"gpu_busy_pct": round(sum(self._samples) / len(self._samples), 1)}
