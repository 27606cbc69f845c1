"""Names a study file may use: training parameters, metrics, objectives, pruners, bundled
data, and the parameters a condition (``when``) may name."""

from __future__ import annotations

from typing import Literal

from hpo.models import MODELS

__all__ = ["TRAINING_PARAMS", "METRICS", "OBJECTIVES", "PRUNERS", "BUNDLED_DATA",
           "MODEL_PARAMS", "CONDITION_KEYS", "TRAINING_DEFAULTS", "GridValue"]

#: The training parameters every objective understands.
TRAINING_PARAMS: tuple[str, ...] = ("architecture", "optimizer", "learning_rate", "batch_size",
                                    "epochs")
#: Metric -> the direction that is better.
#: Which way an objective is better (Optuna's names).
Direction = Literal["minimize", "maximize"]
METRICS: dict[str, Direction] = {"val_accuracy": "maximize", "val_loss": "minimize"}
#: What a multi-objective study can optimise together -> the direction that is better: the
#: validation metric, the training time of the trial (seconds of ``fit``), the model size.
OBJECTIVES: dict[str, Direction] = {**METRICS, "train_time": "minimize", "n_params": "minimize"}
#: The training defaults a study file's [training] overrides.
TRAINING_DEFAULTS: dict[str, object] = {"optimizer": "Adam", "learning_rate": 0.001,
                                        "batch_size": 32, "epochs": 10}
PRUNERS: tuple[str, ...] = ("none", "median", "successive_halving", "hyperband")
BUNDLED_DATA: tuple[str, ...] = ("digits",)
#: Every model hyperparameter some architecture takes.
MODEL_PARAMS: frozenset[str] = frozenset(p for m in MODELS.values() for p in m.hyperparameters)
#: The parameters a space parameter's ``when`` may name.
CONDITION_KEYS: tuple[str, ...] = ("architecture", "optimizer")
GridValue = str | int | float | bool
