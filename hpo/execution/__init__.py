"""Running a study: the worker loop (claim, train, tell), the processes around it (recycling,
isolation, supervised workers), signals, and how a run ends. The only layer that starts
processes, calls ``execv`` or installs signal handlers."""

from hpo.execution._launch import (
                                   WorkerSpec,
                                   child_main,
                                   execute,
                                   launch_workers,
                                   plan_run,
                                   plan_workers,
                                   work,
)
from hpo.execution._loop import (
                                   WorkerRun,
                                   prepare_study,
                                   report_best,
                                   run_study,
                                   run_worker,
)
from hpo.execution._outcome import ENDINGS, failure_line
from hpo.execution._signals import (
                                   STOP_SIGNALS,
                                   forwarding_signals,
                                   serve_until_signal,
                                   worker_signals,
)

__all__ = [
    "WorkerRun",
    "run_study",
    "run_worker",
    "prepare_study",
    "report_best",
    "WorkerSpec",
    "plan_workers",
    "plan_run",
    "execute",
    "work",
    "launch_workers",
    "child_main",
    "ENDINGS",
    "failure_line",
    "STOP_SIGNALS",
    "worker_signals",
    "forwarding_signals",
    "serve_until_signal",
]
