"""The one exception hierarchy of ``hpo``, typed by intent.

* :class:`HpoError`: bad input a user can fix (a study file, a folder, a setting, an
  unreachable database). One line that says what was received, what was expected and how to
  fix it; the CLI prints it and exits with status 2. :class:`InvalidSetting` names the
  setting (``n_trials``); the CLI renders it as its flag (``--n-trials``).
* :class:`TrialFailed`: one trial failed (NaN loss, out of memory, an unreadable batch); it
  is stored as FAIL with its reason and the search goes on.
* :class:`TooManyFailures`: N trials failed in a row: no longer one trial's problem but the
  code's or the environment's (a bug, a broken driver). The worker stops with one line and
  exit status 1; the failed grid points are re-run on resume (KerasTuner's rule).
* :class:`Stopped`: the worker was asked to stop by a signal (SIGTERM from Slurm,
  Kubernetes, ``docker stop``; SIGHUP from a closed SSH session; ...); the trial in flight
  is FAIL and the exit status 128 + signal. SIGINT stays Python's
  :class:`KeyboardInterrupt`.
"""

from __future__ import annotations

import contextlib
import re
from typing import Callable, Iterator

#: The settings a message may name as ``$name`` (the run's, the dashboard's, the commands').
SETTINGS = frozenset({
    "study", "sampler", "storage", "data", "study_name", "n_trials", "timeout", "seed",
    "precision", "pruner", "retry_failed", "heartbeat", "grace", "outage_timeout", "cache_dir",
    "strict", "quiet", "artifacts", "keep_models", "max_models_gb", "figures", "workers", "gpus", "trials_per_gpu", "worker_name",
    "log_json", "objectives", "repeats", "enqueue_defaults", "isolate", "recycle_after", "pool_size",
    "max_consecutive_failures", "compile_cache", "steps_per_execution", "connect_timeout", "max_retry", "host", "port", "allow_write", "token_file",
    "force",
    "model", "out", "format",
})
_SETTING = re.compile(r"\$(" + "|".join(sorted(SETTINGS, key=len, reverse=True)) + r")\b")

__all__ = [
    "HpoError",
    "ConfigError",
    "DataError",
    "ModelError",
    "StorageError",
    "NoStudies",
    "StudyError",
    "InvalidSetting",
    "OutputError",
    "writing",
    "TrialFailed",
    "TooManyFailures",
    "Stopped",
]


class HpoError(Exception):
    """Base class of every error ``hpo`` raises on bad input.

    A message names a setting as ``$name`` (``use $study_name to start a new study``): the
    library shows ``study_name``, the command line its flag (``--study-name``), through
    :meth:`render`.
    """

    def __str__(self) -> str:
        return self.render(lambda setting: setting)

    def render(self, name: Callable[[str], str]) -> str:
        """The message with each setting called ``name(setting)`` (a CLI flag, say)."""
        text = super().__str__()
        return _SETTING.sub(lambda match: name(match.group(1)), text) if "$" in text else text


class ConfigError(HpoError):
    """A study file, or an override of one, is not valid."""


class DataError(HpoError):
    """The image data cannot be found, read or split."""


class ModelError(HpoError):
    """A model cannot be built as asked (unknown architecture, input too small, weights)."""


class StorageError(HpoError):
    """The study database cannot be reached or used."""


class NoStudies(StorageError):
    """A command that only reads found no study database there (no file, no Optuna tables):
    nothing was created in its place."""


class StudyError(HpoError):
    """The study in the database does not match what was asked of it."""


class OutputError(HpoError):
    """A file the command was asked to write cannot be written there (a missing or
    read-only folder, a name too long, a path through a file, a full disk)."""


@contextlib.contextmanager
def writing(path: object, what: str, setting: str = "out") -> Iterator[None]:
    """Turns an ``OSError`` raised while writing ``what`` to ``path`` into one
    :class:`OutputError` line naming the setting to change."""
    try:
        yield
    except OSError as exc:
        reason = exc.strerror or exc.__class__.__name__
        raise OutputError(f"cannot write {what} to {str(path)!r} ({reason}); expected a path "
                          f"in a writable folder: pass another ${setting}") from None


class InvalidSetting(ConfigError):
    """A run setting has a value it cannot take.

    Attributes:
        setting: The setting's name in the library (``n_trials``).
        problem: What is wrong, without the name (``must be at least 1``).
        received: The value received.
    """

    def __init__(self, setting: str, problem: str, received: object) -> None:
        self.setting = setting
        self.problem = problem
        self.received = received
        super().__init__(f"${setting}")

    def render(self, name: Callable[[str], str]) -> str:
        """The message with the setting called ``name(setting)`` (a CLI flag, say)."""
        shown = repr(self.received) if isinstance(self.received, str) else self.received
        tail = "" if self.received is None else f", received {shown}"
        problem = _SETTING.sub(lambda match: name(match.group(1)), self.problem)
        return f"{name(self.setting)} {problem}{tail}"


class TrialFailed(Exception):
    """One trial failed (NaN loss, out of memory, a backend error); the search goes on.

    The reason is stored in the trial's ``fail_reason`` user attribute.
    """


class TooManyFailures(Exception):
    """``count`` trials in a row failed; the worker stops (exit status 1).

    Attributes:
        count: Failed trials in a row.
        last_reason: The last one's ``fail_reason``.
    """

    def __init__(self, count: int, last_reason: str) -> None:
        self.count = count
        self.last_reason = last_reason
        super().__init__(
            f"{count} trial{'s' if count != 1 else ''} failed in a row (last: "
            f"{last_reason or 'no reason recorded'}); "
            "this worker stops, as a bug or a broken environment fails every trial. Fix the "
            "cause (see 'hpo trials STUDY' for each fail_reason), then resume with the same "
            "command: the failed grid points are trained again; raise max_consecutive_failures "
            "if failures in a row are expected")


class Stopped(BaseException):
    """A signal asked this worker to stop (SIGTERM, SIGHUP, ...); not an error of the trial.

    A BaseException, as KeyboardInterrupt is, so that no ``except Exception`` swallows it.
    Its text (``stopped (SIGHUP)``) is the stopped trial's ``fail_reason``.

    Attributes:
        signum: The signal received.
        cause: Why it was sent, when hpo knows better than the signal's name (``its
            supervisor, process 1234, died``).
    """

    def __init__(self, signum: int, cause: str | None = None) -> None:
        import signal

        self.signum = signum
        self.cause = cause
        super().__init__(f"stopped ({cause or signal.Signals(signum).name})")

    @property
    def exit_code(self) -> int:
        """128 + the signal number, as a shell reports a process a signal ended."""
        return 128 + self.signum
