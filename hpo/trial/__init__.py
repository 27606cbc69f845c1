"""One trial: the objective (build, compile, fit, evaluate, record), its Keras callbacks, the
device and precision it runs on, and its artifacts (figures, kept models).

The Keras callbacks are loaded on first use, so that importing this package loads no Keras.
"""

from typing import Any

from hpo.trial._artifacts import (
    Artifacts,
    artifact_store,
    disk_usage,
    export_model,
    model_path,
    models_folder,
)
from hpo.trial._device import (
    PRECISIONS,
    apply_precision,
    backend,
    configure_gpus,
    configured_backend,
    describe_host,
    enable_compile_cache,
    gpu_count,
    is_out_of_memory,
    keep_freed_memory,
    resolve_precision,
    training_errors,
)
from hpo.trial._gpu import gpu_memory_mb, visible_device
from hpo.trial._objective import (
    EpochReport,
    Objective,
    TrialFailed,
    evaluate_classifier,
)
from hpo.trial._recorder import TrialRecorder
from hpo.trial._plots import confusion_matrix, roc_curve, training_curves

_KERAS_NAMES = ("NonFiniteLossError", "NanGuard", "EpochRecorder", "ResultEpoch",
                "pruning_callback")

__all__ = [
    "Objective",
    "EpochReport",
    "TrialRecorder",
    "TrialFailed",
    "evaluate_classifier",
    "PRECISIONS",
    "apply_precision",
    "keep_freed_memory",
    "backend",
    "configure_gpus",
    "configured_backend",
    "describe_host",
    "enable_compile_cache",
    "gpu_count",
    "is_out_of_memory",
    "resolve_precision",
    "training_errors",
    "Artifacts",
    "artifact_store",
    "model_path",
    "models_folder",
    "export_model",
    "disk_usage",
    "gpu_memory_mb",
    "visible_device",
    "confusion_matrix",
    "roc_curve",
    "training_curves",
    *_KERAS_NAMES,
]


def __getattr__(name: str) -> Any:  # the callbacks import Keras: only when asked for
    if name in _KERAS_NAMES:
        from hpo.trial import _callbacks

        return getattr(_callbacks, name)
    raise AttributeError(f"module 'hpo.trial' has no attribute {name!r}")
