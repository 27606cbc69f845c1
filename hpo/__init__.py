"""hpo: hyperparameter search for Keras image classifiers, on Optuna.

Studies are TOML files (the bundled ones: the repository's ``studies/`` folder, shipped as
``hpo._studies``; or your own ``studies/`` folder); every study is a plain Optuna study in
SQLite or PostgreSQL. The public API::

    import hpo
    config = hpo.load_study_config("demo")
    study = hpo.run("demo", sampler="grid")      # a stock optuna.Study
    print(hpo.best("demo").params)
"""

from typing import TYPE_CHECKING

from hpo.config import StudyConfig, available_studies, load_study_config
from hpo.errors import (
    ConfigError,
    DataError,
    HpoError,
    ModelError,
    StorageError,
    StudyError,
)

__all__ = [
    "StudyConfig",
    "available_studies",
    "load_study_config",
    "run",
    "best",
    "load_study",
    "HpoError",
    "ConfigError",
    "DataError",
    "ModelError",
    "StorageError",
    "StudyError",
]
__version__ = "0.1.0"

if TYPE_CHECKING:  # the real signatures for type checkers; at run time, __getattr__ below
    from hpo.api import best, load_study, run


def __getattr__(name: str) -> object:  # keeps ``import hpo`` free of Keras and TensorFlow
    if name in ("run", "best", "load_study"):
        from hpo import api

        return getattr(api, name)
    raise AttributeError(f"module 'hpo' has no attribute {name!r}")
