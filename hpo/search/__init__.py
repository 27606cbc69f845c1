"""What to try: the search space and grid of a study, samplers (with the worker-safe grid
sampler), pruners, and the thesis baseline (each optimizer at its Keras defaults)."""

from hpo.search._baselines import default_configurations, enqueue_defaults, is_default
from hpo.search._pruners import make_pruner
from hpo.search._samplers import (
    SAMPLERS,
    WorkerGridSampler,
    canonical_sampler,
    make_sampler,
)
from hpo.search._space import (
    TrialParams,
    describe_space,
    distribution,
    grid_search_space,
    resolve,
    space_hash,
    suggest,
    to_space,
)

__all__ = [
    "TrialParams",
    "grid_search_space",
    "suggest",
    "resolve",
    "space_hash",
    "describe_space",
    "distribution",
    "to_space",
    "SAMPLERS",
    "WorkerGridSampler",
    "canonical_sampler",
    "make_sampler",
    "make_pruner",
    "default_configurations",
    "enqueue_defaults",
    "is_default",
]
