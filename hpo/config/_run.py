"""Run settings: everything ``hpo run`` / ``hpo worker`` / :func:`hpo.run` is asked to do,
validated once.

One frozen pydantic model, built by the CLI from its options, by the Python API from keyword
arguments, and by a child process from JSON in its environment (the supervisor, the isolated
trials and the recycled worker hand settings over as data, never as a rebuilt command line).
An invalid value is one :class:`hpo.errors.InvalidSetting` naming the setting (``n_trials``);
the CLI renders it as its flag (``--n-trials``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from hpo.errors import ConfigError, InvalidSetting

__all__ = ["RunSettings", "DEFAULT_RECYCLE_AFTER", "SETTINGS_ENV", "settings_from_env", "flag",
           "folder_problem"]

#: Trials after which a TensorFlow worker replaces its process (``recycle_after``).
DEFAULT_RECYCLE_AFTER = 20
#: The environment variable through which a parent hands a child process its settings.
SETTINGS_ENV = "HPO_RUN_SETTINGS"

_DEFAULT_STORAGE = "sqlite:///hpo.db"

Precision = Literal["auto", "float32", "mixed_float16", "mixed_bfloat16"]

# setting -> what an allowed value is, for the one-line message
_EXPECTED = {
    "n_trials": "at least 1",
    "seed": "from 0 to 4294967295 (what NumPy and Optuna's samplers accept)",
    "timeout": "0 or more seconds",
    "retry_failed": "0 or more",
    "heartbeat": "at least 1 second",
    "grace": "at least 1 second",
    "outage_timeout": "0 or more seconds",
    "connect_timeout": "from 1 to 600 seconds",
    "keep_models": "0 or more",
    "max_models_gb": "more than 0 gigabytes",
    "workers": "at least 1",
    "trials_per_gpu": "a number of at least 1, or auto",
    "repeats": "at least 1",
    "recycle_after": "0 (never) or more trials",
    "max_consecutive_failures": "at least 1",
    "precision": "one of auto, float32, mixed_float16, mixed_bfloat16",
    "steps_per_execution": "from 1 to 10000",
}


class RunSettings(BaseModel):
    """What one run of a study is asked to do (the options of ``hpo run``).

    Attributes mirror the command-line options one to one; see ``hpo run --help``. The
    storage URL is kept out of ``repr`` (it may hold a password).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True,
                              validate_default=False)

    study: str
    sampler: str = "grid"
    storage: str = Field(default=_DEFAULT_STORAGE, repr=False)
    data: Path | None = None
    study_name: str | None = None
    n_trials: int | None = Field(default=None, ge=1)
    timeout: float | None = Field(default=None, ge=0)
    seed: int | None = Field(default=None, ge=0, le=2**32 - 1)
    precision: Precision = "auto"
    pruner: str | None = None
    retry_failed: int = Field(default=1, ge=0)
    heartbeat: int = Field(default=60, ge=1)
    grace: int | None = Field(default=None, ge=1)
    outage_timeout: float = Field(default=600.0, ge=0)
    connect_timeout: float = Field(default=10.0, ge=1, le=600)
    cache_dir: Path | None = None
    strict: bool = False
    quiet: bool = False
    artifacts: Path = Path("hpo-artifacts")
    keep_models: int = Field(default=3, ge=0)
    max_models_gb: float = Field(default=10.0, gt=0)
    figures: bool = True
    workers: int = Field(default=1, ge=1)
    gpus: str | None = None
    trials_per_gpu: pydantic.PositiveInt | Literal["auto"] = 1
    worker_name: str = "main"
    log_json: bool = False
    objectives: str | None = None
    repeats: int | None = Field(default=None, ge=1)
    enqueue_defaults: bool = False
    isolate: bool = False
    recycle_after: int | None = Field(default=None, ge=0)
    max_consecutive_failures: int = Field(default=3, ge=1)
    compile_cache: bool = True
    steps_per_execution: int = Field(default=1, ge=1, le=10_000)

    @classmethod
    def create(cls, **values: Any) -> RunSettings:
        """Validated settings from keyword arguments (ints accepted where floats are).

        Raises:
            InvalidSetting: A value out of range, of the wrong type, or an unknown setting.
        """
        for key in ("timeout", "outage_timeout", "connect_timeout", "max_models_gb"):
            if isinstance(values.get(key), int) and not isinstance(values.get(key), bool):
                values[key] = float(values[key])
        packing = values.get("trials_per_gpu")
        if isinstance(packing, str) and packing.strip().isdigit():
            values["trials_per_gpu"] = int(packing)
        for key in ("data", "cache_dir", "artifacts"):
            if isinstance(values.get(key), str):
                values[key] = Path(values[key])
        try:
            settings = cls(**values)
        except pydantic.ValidationError as exc:
            raise _one_line(exc, values) from None
        settings.check_paths()
        return settings

    def check_paths(self) -> None:
        """Refuses, before any trial, a path setting that names the wrong kind of thing:
        ``artifacts`` and ``cache_dir`` must be folders or paths where one can be made,
        ``data`` an existing folder (or bundled:NAME).

        Raises:
            InvalidSetting: The first such path.
        """
        for setting in ("artifacts", "cache_dir"):
            path = getattr(self, setting)
            problem = None if path is None else folder_problem(path)
            if problem is not None:
                raise InvalidSetting(setting, f"must be a folder, or a path where one can be "
                                              f"made; {problem}", str(path))
        if self.data is not None and not str(self.data).startswith("bundled:"):
            try:
                found = self.data.expanduser().is_dir()
                exists = self.data.expanduser().exists()
            except (OSError, ValueError):
                found = exists = False
            if not found:
                raise InvalidSetting("data", "must be an image folder (or bundled:NAME); "
                                             + ("it is a file" if exists else
                                                "it does not exist"), str(self.data))

    def replace(self, **changes: Any) -> RunSettings:
        """A validated copy with ``changes``."""
        return RunSettings.create(**{**self.model_dump(), **changes})

    @property
    def grace_period(self) -> int:
        """Seconds without heartbeat before a trial counts as lost (default 3 heartbeats)."""
        return self.grace or 3 * self.heartbeat

    def to_env(self) -> dict[str, str]:
        """These settings as the environment of a child process (the storage URL included:
        the environment, unlike the command line, is not shown by ``ps``)."""
        return {SETTINGS_ENV: self.model_dump_json()}


def folder_problem(path: Path) -> str | None:
    """Why no folder can be at ``path`` (a file is there, or above it; a folder above it
    is not writable), or None when one is there or can be made."""
    try:
        path = path.expanduser().absolute()
        if path.exists() and not path.is_dir():
            return "it is a file"
        if path.is_dir():
            return None if os.access(path, os.W_OK | os.X_OK) else "it is not writable"
        above = path.parent
        while not above.exists() and above != above.parent:
            above = above.parent
        if not above.is_dir():
            return f"{str(above)!r} above it is a file"
        if not os.access(above, os.W_OK | os.X_OK):
            return f"the folder {str(above)!r} above it is not writable"
    except (OSError, ValueError) as exc:  # a NUL in the name, a name too long
        return f"it is not a usable path ({exc})"
    return None


def flag(setting: str) -> str:
    """The command-line flag of a setting: ``n_trials`` -> ``--n-trials``."""
    return "--" + setting.replace("_", "-")


def settings_from_env(environ: dict[str, str] | None = None) -> RunSettings:
    """The settings a parent process handed over in :data:`SETTINGS_ENV`.

    Raises:
        ConfigError: The variable is unset or does not hold valid settings.
    """
    text = (os.environ if environ is None else environ).get(SETTINGS_ENV)
    if not text:
        raise ConfigError(f"{SETTINGS_ENV} is not set; this entry point runs a worker that "
                          "'hpo run' started. Run 'hpo worker --study NAME' instead")
    try:
        return RunSettings.model_validate_json(text)
    except pydantic.ValidationError as exc:
        raise _one_line(exc, {}) from None


def _one_line(exc: pydantic.ValidationError, values: dict[str, Any]) -> InvalidSetting:
    """The first problem of ``exc`` as one :class:`InvalidSetting`."""
    error = exc.errors(include_url=False)[0]
    # a union's errors are located at the member (trials_per_gpu.constrained-int)
    setting = str(error["loc"][0]) if error["loc"] else "settings"
    union = len(error["loc"]) > 1
    received = values.get(setting, error.get("input"))
    if error["type"] == "extra_forbidden":
        known = ", ".join(RunSettings.model_fields)
        return InvalidSetting(setting, f"is an unknown setting; expected one of {known}",
                              received)
    if error["type"] == "missing":
        return InvalidSetting(setting, "is required", None)
    expected = _EXPECTED.get(setting)
    if error["type"].endswith("_type") and expected is not None and not union:
        kind = error["type"].removesuffix("_type").replace("_parsing", "")
        expected = f"{'an' if kind[0] in 'aeiou' else 'a'} {kind} ({expected})"
    if expected is None:
        annotation = RunSettings.model_fields[setting].annotation if \
            setting in RunSettings.model_fields else None
        expected = getattr(annotation, "__name__", None) or str(annotation)
        expected = expected.replace("typing.", "").replace("pathlib.", "")
    return InvalidSetting(setting, f"must be {expected}", received)
