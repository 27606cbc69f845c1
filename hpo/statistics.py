"""Run-to-run statistics of repeated configurations: mean, std, 95 % CI, Welch's t-test."""

from __future__ import annotations

import math
from typing import Sequence

__all__ = ["summarize", "welch_test"]


def summarize(values: Sequence[float]) -> dict[str, float | list[float] | int]:
    """Mean, sample standard deviation and the t-based 95 % confidence interval of the mean.

    With one value the std is 0 and the interval is that value.
    """
    from scipy import stats

    n = len(values)
    mean = math.fsum(values) / n
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    half = float(stats.t.ppf(0.975, n - 1)) * std / math.sqrt(n) if n > 1 else 0.0
    return {"n": n, "mean": mean, "std": std, "ci95": [mean - half, mean + half]}


def welch_test(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """Welch's unequal-variance t-test of two samples (two-sided).

    Raises:
        ValueError: A sample has fewer than two values.
    """
    from scipy import stats

    if len(a) < 2 or len(b) < 2:
        raise ValueError("Welch's t-test needs at least 2 values per configuration; run the "
                         "study with $repeats 2 or more")
    result = stats.ttest_ind(a, b, equal_var=False)
    return {"t": float(result.statistic), "p": float(result.pvalue)}
