"""Log set-up of an hpo process: one ``hpo: LEVEL: message`` line per record on standard
error, and the backends' start-up chatter kept out of it."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from typing import TextIO

import optuna

__all__ = ["quiet_backends", "setup_logging"]


class _Handler(logging.StreamHandler[TextIO]):
    """Log lines to standard error; when it cannot be written (a closed pipe, a hung-up
    terminal) it is dropped, not reported with a traceback on that same stream."""

    def handleError(self, record: logging.LogRecord) -> None:
        from hpo.reporting._output import WRITE_ERRORS, drop_stream

        error = sys.exc_info()[1]
        if isinstance(error, WRITE_ERRORS):
            drop_stream(self.stream)
            return
        super().handleError(record)


def quiet_backends() -> None:
    """Keeps TensorFlow's and JAX's start-up chatter out of the output; call before import."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")


def setup_logging(quiet: bool) -> None:
    """hpo's log lines at INFO (WARNING when ``quiet``); Optuna's own at ERROR, since hpo
    prints each trial's outcome (with a failed trial's reason) itself."""
    handler = _Handler(sys.stderr)
    handler.setFormatter(logging.Formatter("hpo: %(levelname)s: %(message)s"))
    logger = logging.getLogger("hpo")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    logger.propagate = False
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
