"""The processes around the worker loop: one worker here (recycled every N trials), each
trial in a fresh process (``isolate``), or N supervised workers (one per GPU or CPU share).

Every process hpo starts is ``python -m hpo.execution``, the same worker a job scheduler (a
Slurm array, a Kubernetes Job) runs as ``hpo worker`` on other hosts against the same
PostgreSQL study. It receives its validated settings as JSON in the ``HPO_RUN_SETTINGS``
environment variable (the storage URL included), never as a rebuilt command line, so a
password never shows in ``ps``.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from hpo.config import (
    DEFAULT_RECYCLE_AFTER,
    RunSettings,
    StudyConfig,
    flag,
    folder_problem,
    load_study_config,
    settings_from_env,
)
from hpo.errors import ConfigError, TooManyFailures
from hpo.execution._loop import prepare_study, report_best
from hpo.execution._outcome import ENDINGS, failure_line
from hpo.execution._packing import MEMORY_SHARE_ENV, memory_env, plan_packing
from hpo.execution._pool import SharedConnections, start_pool
from hpo.execution._signals import (
    PARENT_ENV,
    forwarding_signals,
    watch_parent,
    worker_signals,
)
from hpo.reporting import Reporter, flush_or_drop
from hpo.storage import (
    StorageOptions,
    close_storage,
    is_sqlite,
    mask_url,
    open_storage,
    storage_of,
    study_lock,
)
from hpo.study import attrs, finished_trials, reap_dead_trials
from hpo.trial import gpu_memory_mb, keep_freed_memory

if TYPE_CHECKING:
    import optuna

__all__ = ["WorkerSpec", "plan_workers", "plan_run", "execute", "work", "launch_workers",
           "child_main"]

_log = logging.getLogger(__name__)
#: The exit status of a worker whose trials all failed (TooManyFailures).
_TRIAL_FAILED = 1
#: How hpo starts a worker process: settings come from the environment.
_CHILD = ("-m", "hpo.execution")
#: The environment variable that hands a run's id to its worker processes (supervised,
#: recycled): the trials they take count towards one ``n_trials`` (see ``_loop._Budget``).
RUN_ID_ENV = "HPO_RUN_ID"


@dataclass(frozen=True)
class WorkerSpec:
    """One worker process to start.

    Attributes:
        name: Recorded with each trial it runs (``gpu0``, ``cpu1``, ...).
        env: Environment variables set for it (``CUDA_VISIBLE_DEVICES``).
    """

    name: str
    env: dict[str, str]


def _all_gpus() -> list[str]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        return [g.strip() for g in visible.split(",") if g.strip()]
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    listing = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30)
    return [str(i) for i, line in enumerate(listing.stdout.splitlines())
            if line.startswith("GPU ")]


def gpu_ids(gpus: str) -> list[str]:
    """The GPU ids ``gpus`` names (``0,1,2`` or ``all``).

    Raises:
        ConfigError: It names no GPU, or not as ids.
    """
    ids = _all_gpus() if gpus == "all" else [g.strip() for g in gpus.split(",") if g.strip()]
    if not ids:
        raise ConfigError(f"$gpus {gpus} found no GPU (nvidia-smi lists none and "
                          "CUDA_VISIBLE_DEVICES is unset); pass ids like $gpus 0,1 or "
                          "use $workers N for CPU workers")
    if not all(g.isdigit() for g in ids):
        raise ConfigError(f"$gpus expects 'all' or GPU ids like 0,1,2; received {gpus!r}")
    twice = sorted({g for g in ids if ids.count(g) > 1}, key=ids.index)
    if twice:
        raise ConfigError(f"$gpus names GPU {', '.join(twice)} more than once (received "
                          f"{gpus!r}); name each GPU once, and use $trials_per_gpu K for K "
                          "workers on each")
    return ids


def plan_workers(*, workers: int, gpus: str | None, per_gpu: int = 1) -> list[WorkerSpec]:
    """One spec per worker: ``per_gpu`` per GPU of ``gpus`` (``0,1,2`` or ``all``; named
    ``gpu0``, or ``gpu0.0``, ``gpu0.1``, ... when packed), else ``workers`` CPU ones.

    Raises:
        ConfigError: ``gpus`` names no GPU, or ``workers`` is below 1.
    """
    if gpus is not None:
        return [WorkerSpec(name=f"gpu{g}" if per_gpu == 1 else f"gpu{g}.{i}",
                           env={"CUDA_VISIBLE_DEVICES": g, **memory_env(per_gpu)})
                for g in gpu_ids(gpus) for i in range(per_gpu)]
    if workers < 1:
        raise ConfigError(f"$workers must be at least 1, received {workers}")
    threads = str(max(1, (os.cpu_count() or 1) // workers))
    return [WorkerSpec(name=f"cpu{i}", env={"TF_NUM_INTRAOP_THREADS": threads,
                                            "OMP_NUM_THREADS": threads})
            for i in range(workers)]


def plan_run(settings: RunSettings, config: StudyConfig | None = None
             ) -> tuple[StudyConfig, Reporter]:
    """The study (with the settings' data, repeats and objectives) and the worker's reporter,
    from validated settings. ``config`` replaces loading the search's ``study`` (the Python
    API may pass a loaded study)."""
    from hpo.data import default_cache_dir
    from hpo.trial import enable_compile_cache

    search, trial, process = settings.search, settings.trial, settings.process
    if trial.cache_dir is None:  # the default: $HPO_CACHE_DIR or ~/.cache/hpo
        problem = folder_problem(default_cache_dir())
        if problem is not None:
            raise ConfigError(f"the image cache folder {str(default_cache_dir())!r} "
                              f"($HPO_CACHE_DIR or ~/.cache/hpo) cannot be used: {problem}; "
                              "pass $cache_dir, or set HPO_CACHE_DIR to a folder")
    if trial.compile_cache:  # before any backend is imported: workers inherit it
        enable_compile_cache((trial.cache_dir or default_cache_dir()) / "compile")
    if config is None:
        config = load_study_config(search.study)
    if search.data is not None:
        config = config.with_data(search.data)
    if search.repeats is not None:
        config = config.with_repeats(search.repeats)
    if search.objectives is not None:
        config = config.with_objectives(search.objectives)
    prefix = "" if trial.worker_name == "main" or process.log_json else \
        f"[{trial.worker_name}] "
    reporter = Reporter(metric=config.metric, quiet=process.quiet,
                        json_lines=process.log_json, prefix=prefix)
    return config, reporter


def execute(settings: RunSettings) -> int:
    """``hpo run``: supervised worker processes when ``workers`` > 1 or ``gpus`` is set,
    else one worker in this process (:func:`work`).

    Returns:
        The exit status: 0, or the first non-zero status of a worker process.

    Raises:
        HpoError: Bad study, data, settings or storage.
        KeyboardInterrupt, Stopped: A signal stopped the worker in this process.
    """
    if settings.process.workers == 1 and settings.process.gpus is None:
        return work(settings)
    return _supervise(settings, uuid.uuid4().hex)


def work(settings: RunSettings, run_id: str | None = None) -> int:
    """``hpo worker``: one worker in this process; with ``isolate``, each trial in a fresh
    child process; otherwise this process is replaced by a fresh one (same PID) every
    ``recycle_after`` trials. Returns the exit status (see :func:`execute`).

    ``run_id``: the run this worker is one process of (a supervisor's, or its own before
    it was recycled); None starts a run of its own. ``n_trials`` is that run's total."""
    run_id = run_id or uuid.uuid4().hex
    config, reporter = plan_run(settings)
    reporter.info(f"storage {mask_url(settings.storage.url)}")
    if settings.process.trials_per_gpu != 1 and MEMORY_SHARE_ENV not in os.environ:
        # hpo worker on a GPU it shares: its share of memory, before a backend loads
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0] or "0"
        for key, value in memory_env(_packing(settings, [visible], reporter)).items():
            os.environ.setdefault(key, value)
    with worker_signals():
        if settings.process.isolate:
            return _run_isolated(settings, config, reporter)
        _run_here(settings, config, reporter, run_id)
    return 0


def _recycle_after(settings: RunSettings) -> int:
    if settings.process.recycle_after is not None:
        return settings.process.recycle_after
    from hpo.trial import configured_backend

    return DEFAULT_RECYCLE_AFTER if configured_backend() == "tensorflow" else 0


def _run_here(settings: RunSettings, config: StudyConfig, reporter: Reporter,
              run_id: str) -> None:
    """Runs the worker here; every ``recycle_after`` trials it replaces this process with a
    fresh one (same PID, same settings, what is left of ``n_trials`` and ``timeout``),
    because TensorFlow keeps memory across trials (BENCHMARKS.md, section 5)."""
    from hpo.execution import _loop

    recycle_after = _recycle_after(settings)
    started = time.monotonic()
    result = _loop.run_worker(config, settings, reporter, run_id=run_id,
                              recycle_after=recycle_after or None)
    if not result.recycle:
        return
    # n_trials stays the run's total: the fresh process counts the run's trials (its id
    # goes with it) in the database, as every worker of a supervised run does
    rest: dict[str, Any] = {"recycle_after": recycle_after, "workers": 1, "gpus": None}
    if settings.search.timeout is not None:
        rest["timeout"] = max(0.0, settings.search.timeout - (time.monotonic() - started))
    os.environ.update(settings.replace(**rest).to_env())
    os.environ[RUN_ID_ENV] = run_id
    flush_or_drop()  # a closed pipe must not stop the hand-over
    os.execv(sys.executable, [sys.executable, *_CHILD])


def _child_settings(settings: RunSettings, **changes: Any) -> dict[str, str]:
    return settings.replace(workers=1, gpus=None, isolate=False, **changes).to_env()


def _run_isolated(settings: RunSettings, config: StudyConfig, reporter: Reporter) -> int:
    """Runs each trial in a fresh child process, so that whatever a trial held (GPU memory
    above all) is returned to the system before the next one."""
    study, _ = prepare_study(config, settings)
    # each child a run of one trial (its own id); this loop counts the run's trials
    env = {**os.environ, **_child_settings(settings, n_trials=1, recycle_after=0)}
    env.pop(RUN_ID_ENV, None)
    search = settings.search
    max_retry = StorageOptions.of(settings.storage).max_retry
    ran = failures = 0
    while search.n_trials is None or ran < search.n_trials:
        finished = finished_trials(study)
        code = _wait_for([_start_child(env)])
        if code not in (0, _TRIAL_FAILED):
            _reap_after(study, code, max_retry)
            return code
        if finished_trials(study) == finished:
            break  # the child found nothing left to run
        ran += 1
        failures = failures + 1 if code == _TRIAL_FAILED else 0
        if failures >= search.max_consecutive_failures:
            break
    if ran and (failures >= search.max_consecutive_failures or failures == ran):
        last = max(study.get_trials(deepcopy=False), key=lambda t: t.number)
        raise TooManyFailures(failures, str(last.user_attrs.get(attrs.FAIL_REASON, "")))
    report_best(study, reporter, config.metric)
    return 0


def _supervise(settings: RunSettings, run_id: str) -> int:
    """Prepares the study once (schema, study, image cache), then starts and supervises the
    workers, all of run ``run_id`` (``n_trials`` is their total); returns the first
    non-zero exit status of a worker, else 0."""
    config, reporter = plan_run(settings)
    process, url = settings.process, settings.storage.url
    per_gpu = 1
    if process.gpus is not None:
        per_gpu = _packing(settings, gpu_ids(process.gpus), reporter)
    specs = plan_workers(workers=process.workers, gpus=process.gpus, per_gpu=per_gpu)
    if is_sqlite(url) and len(specs) > 1:
        _log.warning(
            "%d workers share the SQLite file %s: fine for a few workers on this host (a "
            "file lock keeps grid points exactly-once), but SQLite serialises every write; "
            "use --storage postgresql://... for GPUs or several hosts", len(specs),
            mask_url(url))
    with worker_signals():  # a signal while the study is prepared stops here, as a worker
        study, _ = prepare_study(config, settings)
    pool = None
    if len(specs) > 1:
        # its own connections go back before the pool takes its share of the database's
        close_storage(storage_of(study))
        pool = start_pool(url, process.pool_size, outage_timeout=settings.storage.outage_timeout)
    shared = "" if pool is None else \
        f" (sharing {pool.size} database connections through PgBouncer)"
    reporter.info(f"storage {mask_url(url)}; starting {len(specs)} workers{shared}: "
                  + ", ".join(spec.name for spec in specs))
    try:
        code = launch_workers(specs, settings, run_id, pool=pool)
    finally:
        if pool is not None:  # its connections are the database's again before reaping
            pool.close()
    _reap_after(study, code, StorageOptions.of(settings.storage).max_retry)
    report_best(study, reporter, config.metric)
    return code


def _reap_after(study: optuna.Study, code: int, max_retry: int) -> None:
    """After a worker process ended badly: a trial it left RUNNING (``kill -9``, the OOM
    killer) is failed and its point re-queued now (one warning line says which), not when
    some worker next starts."""
    if code != 0:
        with study_lock(storage_of(study), study.study_name):
            reap_dead_trials(study, max_retry=max_retry)


def _packing(settings: RunSettings, gpus: list[str], reporter: Reporter) -> int:
    """Workers per GPU for ``settings.trials_per_gpu``, from what the study measured."""
    peaks: list[float] = []
    if settings.process.trials_per_gpu == "auto":
        peaks = _measured_peaks(settings)
    packing = plan_packing(settings.process.trials_per_gpu, gpus, peaks,
                           {g: gpu_memory_mb(g) for g in gpus} if peaks else {})
    reporter.info(f"trials per GPU: {packing.why}")
    return packing.per_gpu


def _measured_peaks(settings: RunSettings) -> list[float]:
    """Peak GPU memory (MiB) the trials of the settings' study recorded, if it exists."""
    import optuna

    from hpo.config import load_study_config

    name = settings.search.study_name or load_study_config(settings.search.study).name
    storage = open_storage(settings.storage.url, StorageOptions.of(settings.storage))
    try:
        if name not in {s.study_name for s in storage.get_all_studies()}:
            return []
        study = optuna.load_study(study_name=name, storage=storage)
        return [float(t.user_attrs["gpu_peak_memory_mb"])
                for t in study.get_trials(deepcopy=False)
                if isinstance(t.user_attrs.get("gpu_peak_memory_mb"), (int, float))]
    finally:
        close_storage(storage)


def launch_workers(specs: list[WorkerSpec], settings: RunSettings,
                   run_id: str | None = None, *, pool: SharedConnections | None = None) -> int:
    """Starts one worker process per spec (``settings`` with the spec's name) and waits for
    all of them; with ``run_id``, as workers of that run (``n_trials`` is their total).

    The workers run in sessions of their own, so that a terminal's Ctrl-C reaches them once,
    through this supervisor: the first stop signal (SIGINT, SIGTERM, SIGHUP, ...: see
    :mod:`hpo.execution._signals`) is passed on to every worker (each marks its running
    trial FAIL and exits 128 + N), a second SIGINT, SIGTERM or SIGQUIT kills them at once.
    Each worker watches this process: when it dies in any way (``kill -9`` included) the
    workers stop as on SIGTERM (:func:`hpo.execution._signals.watch_parent`).

    With ``pool``, the workers reach the database through it (its URL, prepared statements
    off) and each holds its pipe end, so that it lasts as long as the last of them
    (:mod:`hpo.execution._pool`).

    Returns:
        0 when every worker succeeded, else the first non-zero exit status.
    """
    run = {RUN_ID_ENV: run_id} if run_id is not None else {}
    pooled: dict[str, Any] = {} if pool is None else {"storage": pool.url}
    extra = {} if pool is None else pool.worker_env()
    keep = () if pool is None else (pool.keep_fd,)
    procs = [_start_child({**os.environ, **spec.env, **run, **extra,
                           **_child_settings(settings, worker_name=spec.name, **pooled)},
                          keep)
             for spec in specs]
    return _wait_for(procs, pool)


def _start_child(env: dict[str, str], keep: tuple[int, ...] = ()) -> subprocess.Popen[bytes]:
    """Starts a worker process (from the main thread: see :func:`watch_parent`) that stops
    when this one dies; it inherits the file descriptors ``keep``."""
    return subprocess.Popen([sys.executable, *_CHILD], env={**env, PARENT_ENV: str(os.getpid())},
                            start_new_session=True, pass_fds=keep)


#: How long the workers of a run whose pool died have to stop (SIGTERM) before SIGKILL.
POOL_LOST_GRACE = 10.0


def _wait_for(procs: list[subprocess.Popen[bytes]],
              pool: SharedConnections | None = None) -> int:
    """Waits for every process, passing the stop signals on (see :func:`launch_workers`).

    With ``pool``: should it end while workers run (its watcher or PgBouncer killed, the
    OOM killer), the workers could reach the database no more and would each wait out the
    outage timeout; they are stopped at once instead (SIGTERM, then SIGKILL after
    :data:`POOL_LOST_GRACE` seconds), with one line saying why, and the supervisor fails
    what they left RUNNING (:func:`_reap_after`) over its own connection."""
    def forward(signum: int) -> None:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signum)

    def kill() -> None:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()

    with forwarding_signals(forward, kill) as received:
        if pool is not None:
            _unless_the_pool_ends(procs, pool, forward, kill)
        codes = [proc.wait() for proc in procs]
    failed = [c for c in codes if c != 0]
    if len(received) > 1:
        return 128 + received[-1]
    if failed:
        return 128 - failed[0] if failed[0] < 0 else failed[0]
    return 0


def _unless_the_pool_ends(procs: list[subprocess.Popen[bytes]], pool: SharedConnections,
                          forward: Callable[[int], None], kill: Callable[[], None]) -> None:
    """Returns when every worker has ended, or stops them when ``pool`` ends first."""
    while any(proc.poll() is None for proc in procs):
        if pool.watcher.poll() is not None:
            break
        time.sleep(0.2)
    else:
        return
    _log.error("the connection pool (PgBouncer) ended while workers ran (its watcher exited "
               "with status %s): stopping the workers; run the same command again to "
               "resume (--pool-size 0 connects each worker directly)", pool.watcher.returncode)
    pool.forget()
    forward(signal.SIGTERM)
    deadline = time.monotonic() + POOL_LOST_GRACE
    while any(proc.poll() is None for proc in procs) and time.monotonic() < deadline:
        time.sleep(0.2)
    kill()


def child_main() -> None:
    """Entry point of a worker process that a supervisor, an isolated run or a recycling
    worker started (``python -m hpo.execution``): settings from the environment, one
    worker, one line and an exit status on failure. It stops when the process that started
    it dies (:func:`watch_parent`)."""
    from hpo.reporting import quiet_backends, setup_logging, write_or_drop

    if os.environ.get(PARENT_ENV, "").isdigit():
        watch_parent(int(os.environ[PARENT_ENV]))
    keep_freed_memory()  # hpo's own process: a CPU step reuses the last one's pages
    quiet_backends()
    try:
        settings = settings_from_env()
        setup_logging(settings.process.quiet)
        code = work(settings, os.environ.get(RUN_ID_ENV) or None)
    except ENDINGS as exc:
        message, code = failure_line(exc, flag)
        write_or_drop(sys.stderr, f"hpo: error: {message}\n")
    flush_or_drop()
    sys.exit(code)
