"""Run settings: everything ``hpo run`` / ``hpo worker`` / :func:`hpo.run` is asked to do,
validated once.

Frozen pydantic sections by concern, as Ray Tune splits its configs: :class:`SearchSettings`
(the worker loop: study, sampler, budget), :class:`TrialSettings` (the objective: seed,
precision, artifacts), :class:`StorageSettings` (the database: URL, heartbeat, grace,
timeouts) and :class:`ProcessSettings` (the launcher: workers, GPUs, isolation, recycling,
output). :class:`RunSettings` holds one of each; each layer takes its section as it is, and
every rule between settings is a validator of its section, checked once, here.

Settings are named flat (``n_trials``, ``storage``: one per command-line option; the names,
:data:`SETTING_NAMES`, come from the models), so the CLI builds them from its options, the
Python API from keyword arguments, and a child process from JSON in its environment (the
supervisor, the isolated trials and the recycled worker hand settings over as data, never
as a rebuilt command line). Every ``ValidationError`` goes through one translator into one
:class:`hpo.errors.InvalidSetting` naming the setting (``n_trials``); the CLI renders it as
its flag (``--n-trials``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field, model_validator

from hpo.errors import ConfigError, InvalidSetting

__all__ = ["RunSettings", "SearchSettings", "TrialSettings", "StorageSettings",
           "ProcessSettings", "SECTIONS", "SETTING_NAMES", "DEFAULT_STORAGE", "FRESH_HEARTBEATS",
           "DEFAULT_RECYCLE_AFTER", "DEFAULT_POOL_SIZE", "MIN_POOL_SIZE", "SETTINGS_ENV",
           "settings_from_env", "flag", "folder_problem"]

#: Trials after which a TensorFlow worker replaces its process (``recycle_after``).
DEFAULT_RECYCLE_AFTER = 20
#: Database server connections the workers of one supervised run (``hpo run --workers N``
#: / ``--gpus``) share through their private PgBouncer (``pool_size``; 0: none, each worker
#: connects directly) and the fewest that cannot deadlock a claim.
DEFAULT_POOL_SIZE = 4
MIN_POOL_SIZE = 4
#: The most: PostgreSQL's own most ``max_connections`` (PgBouncer reads 2**31 and more as
#: a pool that never hands out a connection: the workers waited forever).
MAX_POOL_SIZE = 262143
#: The environment variable through which a parent hands a child process its settings.
SETTINGS_ENV = "HPO_RUN_SETTINGS"

#: The storage a run uses unless told otherwise (every default storage URL is this one).
DEFAULT_STORAGE = "sqlite:///hpo.db"

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
    "pool_size": "0 (direct connections) or from 4 to 262143 connections",
    "max_consecutive_failures": "at least 1",
    "precision": "one of auto, float32, mixed_float16, mixed_bfloat16",
    "steps_per_execution": "from 1 to 10000",
}


#: Heartbeats a live trial's last one may be behind: a trial is stale only once its last
#: heartbeat is older than this many of its worker's heartbeat intervals (and the grace).
FRESH_HEARTBEATS = 2


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True,
                              validate_default=False, populate_by_name=True)


class SearchSettings(_Section):
    """What to search and when to stop: the worker loop's section (``hpo run``'s study,
    sampler, budget and retry options)."""

    study: str
    sampler: str = "grid"
    study_name: str | None = None
    data: Path | None = None
    objectives: str | None = None
    repeats: int | None = Field(default=None, ge=1)
    pruner: str | None = None
    n_trials: int | None = Field(default=None, ge=1)
    timeout: float | None = Field(default=None, ge=0)
    retry_failed: int = Field(default=1, ge=0)
    enqueue_defaults: bool = False
    max_consecutive_failures: int = Field(default=3, ge=1)


class TrialSettings(_Section):
    """How each trial is trained and what it keeps: the objective's section."""

    seed: int | None = Field(default=None, ge=0, le=2**32 - 1)
    precision: Precision = "auto"
    cache_dir: Path | None = None
    strict: bool = False
    artifacts: Path = Path("hpo-artifacts")
    keep_models: int = Field(default=3, ge=0)
    max_models_gb: float = Field(default=10.0, gt=0)
    figures: bool = True
    compile_cache: bool = True
    steps_per_execution: int = Field(default=1, ge=1, le=10_000)
    worker_name: str = "main"


class StorageSettings(_Section):
    """Where the study lives and how a worker keeps its trials alive there. The URL
    (setting ``storage``) is kept out of ``repr``: it may hold a password."""

    url: str = Field(default=DEFAULT_STORAGE, alias="storage", repr=False)
    heartbeat: int = Field(default=60, ge=1)
    grace: int | None = Field(default=None, ge=1)
    outage_timeout: float = Field(default=600.0, ge=0)
    connect_timeout: float = Field(default=10.0, ge=1, le=600)

    @model_validator(mode="after")
    def _grace_covers_heartbeats(self) -> StorageSettings:
        least = FRESH_HEARTBEATS * self.heartbeat
        if self.grace is not None and self.grace < least:
            raise _Rule("grace", f"{self.grace} s would fail live trials: received "
                                 f"{self.grace} s with $heartbeat {self.heartbeat} s, expected "
                                 f"at least {least} s ({FRESH_HEARTBEATS} heartbeats); pass "
                                 f"$grace {least} or more, or a shorter $heartbeat", None)
        return self

    @property
    def grace_period(self) -> int:
        """Seconds without heartbeat before a trial counts as lost (default 3 heartbeats)."""
        return self.grace or 3 * self.heartbeat


class ProcessSettings(_Section):
    """Which processes run the workers, and how they report: the launcher's section."""

    workers: int = Field(default=1, ge=1)
    gpus: str | None = None
    trials_per_gpu: pydantic.PositiveInt | Literal["auto"] = 1
    isolate: bool = False
    recycle_after: int | None = Field(default=None, ge=0)
    pool_size: int = Field(default=DEFAULT_POOL_SIZE, ge=0, le=MAX_POOL_SIZE)
    quiet: bool = False
    log_json: bool = False

    @model_validator(mode="after")
    def _pool_fits_a_claim(self) -> ProcessSettings:
        if 0 < self.pool_size < MIN_POOL_SIZE:
            raise _Rule("pool_size", f"must be 0 (direct connections) or at least "
                                     f"{MIN_POOL_SIZE} connections: through the pool, the study "
                                     "lock's holder needs 2, the next worker waiting for it 1 "
                                     "and a worker opening the study 2 at once",
                                     self.pool_size)
        return self

    @model_validator(mode="after")
    def _packing_needs_gpus(self) -> ProcessSettings:
        if self.gpus is None and self.workers > 1 and self.trials_per_gpu != 1:
            raise _Rule("trials_per_gpu", f"{self.trials_per_gpu} applies to workers on GPUs, "
                                          f"received with $workers {self.workers} CPU workers "
                                          "and no $gpus; pass $gpus ids (e.g. $gpus 0,1), or "
                                          "drop $trials_per_gpu", None)
        return self


#: The sections of :class:`RunSettings`, by attribute.
SECTIONS: dict[str, type[_Section]] = {"search": SearchSettings, "trial": TrialSettings,
                                       "storage": StorageSettings, "process": ProcessSettings}


def _setting_names() -> dict[str, tuple[str, str]]:
    """Setting name (a flag's, a keyword's) -> (section, field), from the models."""
    names: dict[str, tuple[str, str]] = {}
    for section, model in SECTIONS.items():
        for field, info in model.model_fields.items():
            names[info.alias or field] = (section, field)
    return names


#: Every run setting's name (``n_trials``, ``storage``, ...) -> (section, field): what
#: :meth:`RunSettings.create` takes and what a message may name, derived from the models.
SETTING_NAMES: dict[str, tuple[str, str]] = _setting_names()


class _Rule(ValueError):
    """A broken cross-field rule of a section, naming the setting to change."""

    def __init__(self, setting: str, problem: str, received: Any) -> None:
        super().__init__(problem)
        self.setting = setting
        self.problem = problem
        self.received = received


class RunSettings(BaseModel):
    """What one run of a study is asked to do (the options of ``hpo run``), by concern:
    :attr:`search` (the loop), :attr:`trial` (the objective), :attr:`storage` (the
    database), :attr:`process` (the launcher). Each layer takes its section as it is.

    Built flat, by setting name (one per command-line option, see ``hpo run --help``), with
    :meth:`create`; :meth:`replace` changes settings by name.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    search: SearchSettings
    trial: TrialSettings = TrialSettings()
    storage: StorageSettings = StorageSettings()
    process: ProcessSettings = ProcessSettings()

    @classmethod
    def create(cls, **values: Any) -> RunSettings:
        """Validated settings from keyword arguments by setting name (ints accepted where
        floats are, strings where paths are).

        Raises:
            InvalidSetting: A value out of range, of the wrong type, a broken rule between
                settings, or an unknown setting.
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
        unknown = [key for key in values if key not in SETTING_NAMES]
        if unknown:
            raise InvalidSetting(unknown[0], "is an unknown setting; expected one of "
                                 + ", ".join(SETTING_NAMES), values[unknown[0]])
        sections: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
        for key, value in values.items():
            sections[SETTING_NAMES[key][0]][key] = value
        built: dict[str, Any] = {}
        for name, model in SECTIONS.items():
            try:
                built[name] = model(**sections[name])
            except pydantic.ValidationError as exc:
                raise _one_line(exc, sections[name], model) from None
        settings = cls(**built)
        settings.check_paths()
        return settings

    def flat(self) -> dict[str, Any]:
        """Every setting by name, as :meth:`create` takes them."""
        return {key: getattr(getattr(self, section), field)
                for key, (section, field) in SETTING_NAMES.items()}

    def check_paths(self) -> None:
        """Refuses, before any trial, a path setting that names the wrong kind of thing:
        ``artifacts`` and ``cache_dir`` must be folders or paths where one can be made,
        ``data`` an existing folder (or bundled:NAME).

        Raises:
            InvalidSetting: The first such path.
        """
        for setting in ("artifacts", "cache_dir"):
            path = getattr(self.trial, setting)
            problem = None if path is None else folder_problem(path)
            if problem is not None:
                raise InvalidSetting(setting, f"must be a folder, or a path where one can be "
                                              f"made; {problem}", str(path))
        data = self.search.data
        if data is not None and not str(data).startswith("bundled:"):
            try:
                found = data.expanduser().is_dir()
                exists = data.expanduser().exists()
            except (OSError, ValueError):
                found = exists = False
            if not found:
                raise InvalidSetting("data", "must be an image folder (or bundled:NAME); "
                                             + ("it is a file" if exists else
                                                "it does not exist"), str(data))

    def replace(self, **changes: Any) -> RunSettings:
        """A validated copy with ``changes`` (by setting name)."""
        return RunSettings.create(**{**self.flat(), **changes})

    def to_env(self) -> dict[str, str]:
        """These settings as the environment of a child process (the storage URL included:
        the environment, unlike the command line, is not shown by ``ps``)."""
        return {SETTINGS_ENV: json.dumps({key: str(value) if isinstance(value, Path)
                                          else value for key, value in self.flat().items()})}


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
        values = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{SETTINGS_ENV} does not hold settings as JSON ({exc}); this entry "
                          "point runs a worker that 'hpo run' started") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{SETTINGS_ENV} holds {type(values).__name__}, expected settings "
                          "as a JSON object; this entry point runs a worker that 'hpo run' "
                          "started")
    return RunSettings.create(**values)


def _one_line(exc: pydantic.ValidationError, values: dict[str, Any],
              model: type[BaseModel]) -> InvalidSetting:
    """The first problem of ``exc`` (raised by the section ``model``) as one
    :class:`InvalidSetting`: the one translator of a settings ValidationError."""
    error = exc.errors(include_url=False)[0]
    rule = (error.get("ctx") or {}).get("error")
    if isinstance(rule, _Rule):  # a cross-field rule: it names its setting itself
        return InvalidSetting(rule.setting, rule.problem, rule.received)
    # a union's errors are located at the member (trials_per_gpu.constrained-int)
    setting = str(error["loc"][0]) if error["loc"] else "settings"  # by alias: storage
    info = next((i for f, i in model.model_fields.items() if (i.alias or f) == setting), None)
    union = len(error["loc"]) > 1
    received = values.get(setting, error.get("input"))
    if error["type"] == "missing":
        return InvalidSetting(setting, "is required", None)
    expected = _EXPECTED.get(setting)
    if error["type"].endswith("_type") and expected is not None and not union:
        kind = error["type"].removesuffix("_type").replace("_parsing", "")
        expected = f"{'an' if kind[0] in 'aeiou' else 'a'} {kind} ({expected})"
    if expected is None:
        annotation = info.annotation if info is not None else None
        expected = getattr(annotation, "__name__", None) or str(annotation)
        expected = expected.replace("typing.", "").replace("pathlib.", "")
    return InvalidSetting(setting, f"must be {expected}", received)
