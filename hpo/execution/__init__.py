"""Running a study: the worker loop (claim, train, tell), and the processes around it
(recycling, isolation, supervised workers). The only layer that starts processes."""

from hpo.execution._launch import WorkerSpec, launch_workers, plan_workers
from hpo.execution._loop import (
    RunOptions,
    WorkerRun,
    prepare_study,
    report_best,
    run_study,
    run_worker,
)

__all__ = [
    "RunOptions",
    "WorkerRun",
    "run_study",
    "run_worker",
    "prepare_study",
    "report_best",
    "WorkerSpec",
    "plan_workers",
    "launch_workers",
]
