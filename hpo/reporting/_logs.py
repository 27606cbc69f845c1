"""Log set-up of an hpo process: one ``hpo: LEVEL: message`` line per record on standard
error, and the backends' start-up chatter kept out of it."""

from __future__ import annotations

import logging
import os
import sys
import warnings

import optuna

__all__ = ["quiet_backends", "setup_logging"]


def quiet_backends() -> None:
    """Keeps TensorFlow's and JAX's start-up chatter out of the output; call before import."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")


def setup_logging(quiet: bool) -> None:
    """hpo's log lines at INFO (WARNING when ``quiet``); Optuna's own at ERROR, since hpo
    prints each trial's outcome (with a failed trial's reason) itself."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("hpo: %(levelname)s: %(message)s"))
    logger = logging.getLogger("hpo")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    logger.propagate = False
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
