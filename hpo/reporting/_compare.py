"""``hpo compare``: is one repeated configuration really better than another?"""

from __future__ import annotations

from typing import Any

import optuna

from hpo.errors import StudyError
from hpo.statistics import summarize, welch_test
from hpo.study import attrs

__all__ = ["compare_trials"]


def compare_trials(study: optuna.Study, a: int, b: int, alpha: float = 0.05) -> dict[str, Any]:
    """Welch's t-test (two-sided, unequal variances) on the repeated runs of trials ``a`` and
    ``b``, with each side's mean, standard deviation and parameters.

    Raises:
        StudyError: A trial is missing or has no repeated runs, or the runs cannot be
            compared (fewer than two each).
    """
    numbers = {t.number: t for t in study.get_trials(deepcopy=False)}
    if a == b:
        raise StudyError(f"received trial {a} twice; expected two different trials of "
                         f"{study.study_name!r} to compare (see 'hpo trials {study.study_name}')")
    samples = {}
    for number in (a, b):
        trial = numbers.get(number)
        if trial is None:
            raise StudyError(f"study {study.study_name!r} has no trial {number} (received "
                             f"trial {number}, expected one of 0..{len(numbers) - 1}); see "
                             f"'hpo trials {study.study_name}'" if numbers else
                             f"study {study.study_name!r} has no trials yet")
        if attrs.REPEAT_VALUES not in trial.user_attrs:
            raise StudyError(f"trial {number} of {study.study_name!r} has no repeated runs to "
                             "compare; run the study with $repeats 2 or more (trials: "
                             f"0..{len(numbers) - 1})")
        samples[number] = trial.user_attrs[attrs.REPEAT_VALUES]
    try:
        test = welch_test(samples[a], samples[b])
    except ValueError as exc:
        raise StudyError(str(exc)) from None
    return {"test": "Welch's t-test (two-sided, unequal variances)", "alpha": alpha,
            **test, "significant": test["p"] < alpha,
            "a": {"trial": a, **summarize(samples[a]), "params": numbers[a].params},
            "b": {"trial": b, **summarize(samples[b]), "params": numbers[b].params}}
