"""Study files: the validated description of a study (data, metric, architectures, grid,
space), loaded from TOML with one-line errors, and the validated settings of a run. The first
layer above errors/models/optimizers."""

from hpo.config._load import (
    BUNDLED_DATA,
    BUNDLED_STUDIES_DIR,
    METRICS,
    OBJECTIVES,
    PRUNERS,
    TRAINING_PARAMS,
    ArchitectureConfig,
    DataConfig,
    GridValue,
    ParamSpec,
    StudyConfig,
    available_studies,
    load_study_config,
)
from hpo.config._run import (
    DEFAULT_RECYCLE_AFTER,
    SETTINGS_ENV,
    RunSettings,
    flag,
    folder_problem,
    settings_from_env,
)
from hpo.config._schema import StudyFile, study_file_schema

__all__ = [
    "ParamSpec",
    "ArchitectureConfig",
    "DataConfig",
    "StudyConfig",
    "TRAINING_PARAMS",
    "METRICS",
    "OBJECTIVES",
    "PRUNERS",
    "BUNDLED_STUDIES_DIR",
    "BUNDLED_DATA",
    "GridValue",
    "available_studies",
    "load_study_config",
    "RunSettings",
    "DEFAULT_RECYCLE_AFTER",
    "SETTINGS_ENV",
    "settings_from_env",
    "flag",
    "folder_problem",
    "StudyFile",
    "study_file_schema",
]
