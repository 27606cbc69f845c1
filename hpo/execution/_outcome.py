"""How a run ends, as one line and an exit status: shared by the CLI and the worker processes
hpo starts, so that both say the same thing about the same failure."""

from __future__ import annotations

from typing import Callable

import optuna
import sqlalchemy.exc

from hpo.errors import HpoError, Stopped, TooManyFailures
from hpo.storage import mask_url

__all__ = ["ENDINGS", "failure_line"]

#: The exceptions that end a run with one line instead of a traceback.
ENDINGS = (HpoError, TooManyFailures, Stopped, KeyboardInterrupt, sqlalchemy.exc.SQLAlchemyError,
           optuna.exceptions.StorageInternalError)


def failure_line(exc: BaseException, name: Callable[[str], str] = str) -> tuple[str, int]:
    """The one line (without the ``hpo: error:`` prefix) and exit status for ``exc``, one of
    :data:`ENDINGS`: 2 for bad input or a lost database, 1 for failures in a row, 130 for
    SIGINT, 128 + N for signal N. ``name`` spells a setting the message names (the command
    line passes :func:`hpo.config.flag`: ``--n-trials``)."""
    if isinstance(exc, HpoError):
        return exc.render(name), 2
    if isinstance(exc, TooManyFailures):
        return str(exc), 1
    if isinstance(exc, KeyboardInterrupt):
        return ("interrupted: a trial that was running is marked FAIL and re-run when you "
                "resume with the same command", 130)
    if isinstance(exc, Stopped):
        return (f"{exc}: a trial that was running is marked FAIL, free for another worker or "
                "for the same command when you resume", exc.exit_code)
    # The database failed after the storage was opened, in a way hpo's storage does not
    # retry: one line, masked; the running trial is reaped on resume.
    cause = exc.__cause__ or exc
    reason = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
    return ("lost the study database: " + mask_url(reason)[:300] +
            "; check the server and resume with the same command", 2)
