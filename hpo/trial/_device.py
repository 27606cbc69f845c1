"""The accelerator: which backend, whether a GPU is there, precision policy, failure types."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

from hpo.errors import ConfigError

__all__ = [
    "PRECISIONS",
    "apply_precision",
    "backend",
    "configure_gpus",
    "configured_backend",
    "describe_host",
    "enable_compile_cache",
    "gpu_count",
    "is_out_of_memory",
    "keep_freed_memory",
    "keep_tensorflow_unloaded",
    "resolve_precision",
    "training_errors",
]

_log = logging.getLogger(__name__)
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")

#: glibc's ``mallopt`` parameters (``<malloc.h>``) and what hpo sets them to. Training on
#: the CPU allocates and frees the same large buffers at every step: TensorFlow's kernels
#: their output tensors, XLA (JAX) each execution's temporary buffer (68 MiB for the demo
#: study's step). At glibc's defaults each was given back to the system when freed and
#: faulted in again, page by page, at the next step: a third of a CPU study's CPU time was
#: in the kernel (BENCHMARKS.md, section 15).
_MALLOPT = (
    # M_ARENA_MAX: one arena for every thread. A thread's own arena grows in heaps of at
    # most 64 MiB, so a larger buffer (XLA's) is mmapped whatever the other settings.
    (-8, 1),
    # M_MMAP_MAX: no allocation gets its own mapping (which is unmapped when freed): all
    # come from the arena, whose freed memory the next step reuses.
    (-4, 0),
    # M_TRIM_THRESHOLD: the arena gives memory back only beyond 256 MiB free at its top.
    (-1, 256 << 20),
    # M_TOP_PAD: and keeps 64 MiB beyond what it uses when it grows or gives back.
    (-2, 64 << 20),
)


def keep_freed_memory() -> bool:
    """Lets glibc's malloc keep freed memory for the next allocation instead of giving it
    back to the system at once (``mallopt``, see ``_MALLOPT``), so that a training step
    reuses the pages of the one before. Process-wide, so only for processes hpo owns (the
    ``hpo`` command and the workers it starts; never the interpreter that calls
    :func:`hpo.run`), before the backend starts its threads (the arena limit applies to
    threads that have none yet). Returns whether every setting was taken: False where the
    C library is not glibc (musl and macOS have no such knobs worth setting), or where the
    user tuned malloc already (a ``MALLOC_*`` variable or ``glibc.malloc`` tunables in
    ``GLIBC_TUNABLES``): theirs wins."""
    import ctypes
    import platform

    if platform.libc_ver()[0] != "glibc":
        return False
    if "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", "") or any(
            name.startswith("MALLOC_") for name in os.environ):
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # no symbol table to search, or no mallopt in it
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return all([bool(mallopt(parameter, value)) for parameter, value in _MALLOPT])


def backend() -> str:
    """The Keras backend in use (``tensorflow``, ``jax`` or ``torch``)."""
    import keras

    return str(keras.backend.backend())


def configured_backend() -> str:
    """The Keras backend ``import keras`` will pick, without importing it (and TensorFlow):
    ``$KERAS_BACKEND``, else ``backend`` in ``$KERAS_HOME/keras.json`` (``~/.keras``), else
    ``tensorflow``, as Keras itself decides."""
    import json

    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    try:
        with open(os.path.join(home, "keras.json"), encoding="utf-8") as handle:
            return str(json.load(handle).get("backend", "tensorflow"))
    except (OSError, ValueError, AttributeError):
        return "tensorflow"


def gpu_count() -> int:
    """Number of GPUs the Keras backend sees (after ``CUDA_VISIBLE_DEVICES``)."""
    name = backend()
    if name == "tensorflow":
        import tensorflow as tf

        return len(tf.config.list_physical_devices("GPU"))
    if name == "jax":
        import jax

        try:
            return len(jax.devices("gpu"))
        except RuntimeError:  # jax raises RuntimeError when no GPU backend is present
            return 0
    if name == "torch":
        import torch

        return int(torch.cuda.device_count())
    return 0


def configure_gpus() -> None:
    """Holds a TensorFlow worker that shares its GPU to its share of the memory
    (``HPO_GPU_MEMORY_SHARE``, set by ``--trials-per-gpu``), else lets it grow as needed.
    Called before TensorFlow initialises the GPU (the first trial).

    JAX gets the same through ``XLA_PYTHON_CLIENT_PREALLOCATE`` / ``_MEM_FRACTION`` (set
    before JAX is imported); TensorFlow needs its API.
    """
    if backend() != "tensorflow":
        return
    import tensorflow as tf

    from hpo.trial._gpu import gpu_memory_mb, visible_device

    share = os.environ.get("HPO_GPU_MEMORY_SHARE")
    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            if share:
                memory = gpu_memory_mb(visible_device())
                if memory is not None:
                    limit = int(float(share) * memory[1])
                    tf.config.set_logical_device_configuration(
                        gpu, [tf.config.LogicalDeviceConfiguration(memory_limit=limit)])
                    continue
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # already initialised: its memory can no longer be changed
            _log.debug("GPU %s already initialised; memory settings unchanged", gpu.name)


def keep_tensorflow_unloaded() -> None:
    """Under another backend, keeps Keras from importing TensorFlow where it is installed.

    ``keras.utils.set_random_seed`` (every trial's first call) seeds TensorFlow "if
    available", and asking imports it: 5.7 s and a second framework's memory in every JAX
    worker's first trial on a host that has both (BENCHMARKS.md section 12), for nothing,
    as nothing of TensorFlow runs under JAX. Keras's lazy ``tensorflow`` module is told it
    is unavailable, unless TensorFlow is the backend or something imported it already.
    """
    import sys

    if backend() == "tensorflow" or "tensorflow" in sys.modules:
        return
    from keras.src.utils import module_utils  # Keras 3's lazy module for TensorFlow

    lazy = getattr(module_utils, "tensorflow", None)
    if lazy is not None and getattr(lazy, "module", None) is None:
        # Keras's (not Optuna's) private state: LazyModule.available caches its answer here
        vars(lazy)["_available"] = False


def resolve_precision(requested: str) -> str:
    """Turns ``auto`` into ``mixed_float16`` on a GPU and ``float32`` on a CPU.

    Raises:
        ConfigError: ``requested`` is not one of :data:`PRECISIONS`.
    """
    if requested not in PRECISIONS:
        raise ConfigError(f"unknown precision {requested!r}; expected one of "
                          f"{', '.join(PRECISIONS)}")
    if requested == "auto":
        return "mixed_float16" if gpu_count() > 0 else "float32"
    return requested


def apply_precision(policy: str) -> None:
    """Sets Keras's global dtype policy for the models built next."""
    import keras

    keras.config.set_dtype_policy(policy)


def training_errors() -> tuple[type[BaseException], ...]:
    """Exception types that fail one trial (NaN, out of memory, a backend error), not a worker.

    Configuration and data errors (:class:`hpo.HpoError`) are not among them: they are the
    user's to fix and stop the run.
    """
    errors: list[type[BaseException]] = [ArithmeticError, MemoryError, RuntimeError, ValueError]
    if backend() == "tensorflow":
        import tensorflow as tf

        errors.append(tf.errors.OpError)
    return tuple(errors)


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an accelerator (or host) out-of-memory error."""
    text = f"{exc.__class__.__name__} {exc}"
    return isinstance(exc, MemoryError) or "RESOURCE_EXHAUSTED" in text or \
        "ResourceExhausted" in text or "out of memory" in text.lower()


def describe_host() -> dict[str, str]:
    """Host name, process id (and where that pid means something: see
    :func:`hpo.study.process_space`) and visible GPUs, recorded with every trial."""
    from hpo.study import process_space

    return {
        "host": socket.gethostname(),
        "pid": str(os.getpid()),
        "process_space": process_space(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
    }


def enable_compile_cache(directory: Path) -> Path | None:
    """Turns on JAX's persistent compilation cache in ``directory``/jax, shared by every
    worker process on the host (JAX writes each entry atomically, so concurrent writers are
    safe): a worker's first trial then loads the XLA programs an earlier worker compiled
    instead of compiling and autotuning them again (2.06x on a whole H100 study, issue 15).

    Set through the environment before JAX is imported, so that the worker processes hpo
    starts inherit it; through ``jax.config`` when JAX is already loaded. A cache directory
    the user chose (``JAX_COMPILATION_CACHE_DIR``) wins. TensorFlow has no equivalent that is
    safe to switch on by default, so nothing is changed for it. Returns the JAX cache
    folder, or None when the configured backend is not JAX.
    """
    if configured_backend() != "jax":
        return None
    import sys

    folder = Path(os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(directory / "jax")))
    # Small CPU programs compile in well under JAX's default 1 s threshold; cache them too.
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    folder.mkdir(parents=True, exist_ok=True)
    if "jax" in sys.modules:
        import jax

        jax.config.update("jax_compilation_cache_dir", str(folder))
        jax.config.update("jax_persistent_cache_min_compile_time_secs",
                          float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))
    return folder
