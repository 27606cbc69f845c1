"""Shared fixtures: generated image folders, tiny study files, storages, a CLI runner."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import pytest

if TYPE_CHECKING:
    import optuna

    from hpo.storage import LockHold

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
# Every process a test starts prints each thread's stack on SIGABRT (:func:`ended`) or a crash.
os.environ.setdefault("PYTHONFAULTHANDLER", "1")

from hpo.testing import make_image_folder, write_study  # noqa: E402
from hpo.trial import keep_freed_memory  # noqa: E402

# Test processes train too (``run_here``, hpo.run): with malloc set as hpo sets it in its own
# processes (README, "Performance"), before Keras is imported and starts its threads, a
# training step reuses the memory of the step before instead of faulting it in again (the
# README's in-process demo runs: 46 -> 34 CPU s).
keep_freed_memory()

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory):
    """The test session uses its own image cache and Keras home (no ~/.keras weights)."""
    base = tmp_path_factory.getbasetemp()
    saved = {k: os.environ.get(k) for k in ("HPO_CACHE_DIR", "KERAS_HOME")}
    os.environ["HPO_CACHE_DIR"] = str(base / "cache")
    os.environ["KERAS_HOME"] = str(base / "keras-home")
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(autouse=True, scope="session")
def _own_postgres_database() -> Iterator[None]:
    """Each test process works in a database of its own on the PostgreSQL server at
    ``HPO_TEST_POSTGRES_URL``, dropped at the end (with whatever a failed test left in it):
    the server's shared database keeps no study of the suite's. The variable is pointed at
    it, so the worker subprocesses and the tests that read it directly use it too."""
    base = os.environ.get("HPO_TEST_POSTGRES_URL")
    if not base:
        yield
        return
    import sqlalchemy

    name = f"hpo_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = sqlalchemy.create_engine(base, isolation_level="AUTOCOMMIT",
                                     poolclass=sqlalchemy.pool.NullPool)
    try:
        with admin.connect() as connection:
            connection.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    except sqlalchemy.exc.SQLAlchemyError:  # the tests that need the server say why
        admin.dispose()
        yield
        return
    os.environ["HPO_TEST_POSTGRES_URL"] = sqlalchemy.engine.make_url(base).set(
        database=name).render_as_string(hide_password=False)
    try:
        yield
    finally:
        os.environ["HPO_TEST_POSTGRES_URL"] = base
        with admin.connect() as connection:
            connection.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def run_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of the whole test run, shared by its test processes (pytest-xdist gives
    each process a folder of its own below it)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(autouse=True)
def _keras_backend_of_the_test(request: pytest.FixtureRequest,
                               tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """``@pytest.mark.keras_backend("jax")``: the ``hpo`` processes the test starts train on
    that backend (``KERAS_BACKEND``). For the scenario tests whose subject is processes and
    storage, not the backend: a JAX process starts in about 3 CPU s where a TensorFlow one
    takes 5 (import alone), and the GPU machines run JAX. Their JAX processes share one
    compilation cache for the whole run, as the workers of one host do. Only for tests
    that train in subprocesses: this test process keeps the backend it imported first."""
    marker = request.node.get_closest_marker("keras_backend")
    if marker is None:
        yield
        return
    (name,) = marker.args
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KERAS_BACKEND", name)
        if name == "jax":
            patch.setenv("JAX_COMPILATION_CACHE_DIR",
                         str(run_folder(tmp_path_factory) / "jax-compile-cache"))
            patch.setenv("XLA_FLAGS", fast_xla_flags())
        yield


def fast_xla_flags() -> str:
    """``XLA_FLAGS`` for the JAX processes of tests: the environment's, plus XLA's least
    backend optimisation. The tests check what hpo does (its processes, storage, reused
    steps), not how fast XLA's code runs; compiling a tiny model's steps unoptimised takes
    a quarter less CPU (tests/test_steps.py's JAX test: 23.5 CPU s instead of 31, user and
    system, side by side on 2 cores), and every process of a test compiles alike, so what
    tests compare stays comparable."""
    own = os.environ.get("XLA_FLAGS", "")
    if "--xla_backend_optimization_level" in own:
        return own
    return f"{own} --xla_backend_optimization_level=0".strip()


@pytest.fixture(autouse=True)
def _own_working_folder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Each test runs in an empty folder of its own: what ``hpo`` writes beside the user
    (``./hpo-artifacts``, ``./hpo.db`` and its lock files) lands there, never in the
    repository. A MonkeyPatch of its own: a test's ``monkeypatch.undo()`` (which undoes
    every change made through the test's ``monkeypatch``) keeps it."""
    with pytest.MonkeyPatch.context() as own:
        own.chdir(tmp_path_factory.mktemp("cwd"))
        yield


@pytest.fixture(autouse=True)
def _hpo_logger_as_it_was() -> Iterator[None]:
    """An in-process CLI run (``setup_logging``) gives the ``hpo`` logger a handler of its
    own and stops its propagation, which would hide later tests' log lines from ``caplog``
    (a test's outcome then depended on which tests ran before it in its worker)."""
    logger = logging.getLogger("hpo")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved[0], saved[1], saved[2]


#: What ``hpo`` writes beside the user by default (globs): never in the checkout after a
#: test. ``hpo.db*`` covers SQLite's own files and the study lock's (``hpo.db.<key>.lock``).
_LEFT_BEHIND = ("hpo-artifacts", "hpo.db*", "build")


def _left_in_the_checkout() -> set[str]:
    return {path.name for pattern in _LEFT_BEHIND for path in REPO.glob(pattern)}


@pytest.fixture(autouse=True)
def _nothing_left_in_the_checkout(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fails the test after which ``./hpo-artifacts``, ``./hpo.db`` (or a file of its) or
    ``./build`` appeared in the repository (a relative default resolved against the
    checkout)."""
    before = _left_in_the_checkout()
    yield
    appeared = sorted(_left_in_the_checkout() - before)
    assert not appeared, f"{request.node.nodeid} left {appeared} in the checkout"


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two classes (stripes across / down) of 24 images each, 24x24 PNG, one folder each."""
    return make_image_folder(tmp_path_factory.mktemp("images") / "data", per_class=24)


@pytest.fixture()
def tiny_study(tmp_path: Path, image_folder: Path) -> Path:
    """A 2x2 grid study of a small CNN on :func:`image_folder`, one epoch per trial."""
    return write_study(tmp_path / "tiny.toml", data=image_folder,
                       name=f"tiny-{uuid.uuid4().hex[:8]}")


@pytest.fixture()
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'study.db'}"


@pytest.fixture()
def postgres_url() -> str:
    url = os.environ.get("HPO_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("HPO_TEST_POSTGRES_URL is not set (no PostgreSQL server to test against)")
    return url


def wait_for_training(name: str, storage: str, proc: subprocess.Popen[str], *,
                      min_epochs: int = 1, timeout: float = 180) -> "optuna.trial.FrozenTrial":
    """Waits until study ``name`` has a RUNNING trial that reported ``min_epochs`` epochs.

    Fails at once if ``proc`` (the worker) exits first.
    """
    import time

    import optuna
    from optuna.trial import TrialState

    from hpo.storage import StorageOptions, open_storage

    # One storage for the whole wait, disposed at the end: a new one per poll would leave
    # its connections open until garbage collection (PostgreSQL allows 100 clients). Opened
    # as hpo opens it: a stock RDBStorage racing the workers to create the schema of a fresh
    # database can lose (optuna#1092) and fail the test for a reason that is not hpo's.
    rdb = open_storage(storage, StorageOptions())
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            try:
                study = optuna.load_study(study_name=name, storage=rdb)
            except KeyError:  # the worker has not created the study yet
                time.sleep(0.3)
                continue
            for trial in study.get_trials(states=(TrialState.RUNNING,)):
                if len(trial.intermediate_values) >= min_epochs:
                    return trial
            time.sleep(0.2)
    finally:
        rdb.engine.dispose()
    raise AssertionError(f"no trial of {name} started training within {timeout} s")


def ended(proc: subprocess.Popen[str], timeout: float) -> tuple[str, str]:
    """``proc.communicate(timeout=timeout)``; a process still running then is sent SIGABRT
    (each of its threads' stacks is printed: ``PYTHONFAULTHANDLER``) and the test fails
    with the end of what it printed, so a hang says where it hung."""
    import signal

    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        raise AssertionError(f"{proc.args} still ran {timeout} s later; its stdout:\n"
                             f"{out[-4000:]}\nits stderr:\n{err[-12000:]}") from None


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 600,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Runs ``python -m hpo ARGS`` as a user would, capturing its output."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "hpo", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def run_here(*args: str, cwd: Path | None = None, timeout: float = 600,
             env: dict[str, str | None] | None = None) -> subprocess.CompletedProcess[str]:
    """Runs ``hpo ARGS`` in this test process (Typer's ``CliRunner``), as :func:`run_cli`
    runs it in a new one: the same command code, the same output and exit status, without
    the 1 CPU s of a new interpreter importing hpo, Optuna and SQLAlchemy. For a command
    that stores, reads or refuses and whose process is not under test; the user's path
    (a real ``python -m hpo``: its start-up, signals, exit) keeps :func:`run_cli`.
    ``timeout`` is :func:`run_cli`'s; an in-process command has none. ``env`` is set for
    the command and put back after it (None: unset).

    An exception that escapes the command is raised here (the test fails with it); the
    Optuna log level the command sets for its run is put back."""
    import contextlib

    import optuna
    from typer.testing import CliRunner

    from hpo.cli import app

    del timeout
    verbosity = optuna.logging.get_verbosity()
    try:
        with contextlib.chdir(cwd or Path.cwd()):
            result = CliRunner().invoke(app, list(args), env=env, catch_exceptions=False)
    finally:
        optuna.logging.set_verbosity(verbosity)
    return subprocess.CompletedProcess(["hpo", *args], result.exit_code, result.stdout,
                                       result.stderr)


@pytest.fixture()
def cli():
    return run_cli


def built_once(tmp_path_factory: pytest.TempPathFactory, name: str,
               build: Callable[[Path], None]) -> Path:
    """A folder that ``build`` fills once per test run, shared by every test process
    (pytest-xdist runs a module's tests in several processes, each of which would train a
    module-scoped fixture's study again). The first process to ask builds it under a file
    lock; the others wait, then read it. Tests treat it as read-only."""
    import fcntl

    base = run_folder(tmp_path_factory)
    folder = base / f"built-{name}"
    with open(base / f"built-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / ".built").exists():
            shutil.rmtree(folder, ignore_errors=True)  # a build that failed half-way
            folder.mkdir()
            build(folder)
            (folder / ".built").touch()
    return folder


def cut_advisory_locks(url: str) -> int:
    """Ends, as a server restart or ``idle_in_transaction_session_timeout`` would, every
    connection that holds an advisory lock in the database at ``url``; how many."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(url, isolation_level="AUTOCOMMIT",
                                      poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as connection:
            return len(connection.execute(sqlalchemy.text(
                "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' "
                "AND granted AND database = (SELECT oid FROM pg_database "
                "WHERE datname = current_database())")).all())
    finally:
        engine.dispose()



@contextlib.contextmanager
def another_hosts_lock(storage: optuna.storages.BaseStorage, study_name: str
                       ) -> Iterator[LockHold]:
    """The study lock of ``study_name`` as a worker of another host takes it: the same
    PostgreSQL advisory lock, without this host's turn (a file lock this process may hold)."""
    from hpo.storage import LockHold, unwrap_storage
    from hpo.storage._locks import _advisory_lock, _lock_key

    hold = LockHold()
    with _advisory_lock(unwrap_storage(storage), _lock_key(study_name), hold):
        yield hold

def free_port() -> int:
    """A TCP port nothing listens on now (on 127.0.0.1)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen[str], timeout: float = 60) -> None:
    """Waits until ``proc`` listens on ``port`` of 127.0.0.1; fails at once if it exits."""
    import socket
    import time

    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"nothing listens on port {port} after {timeout} s"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)


#: The tests that take longest (``--durations`` on 2 busy cores), roughly longest first: they
#: start first, so that the last test to finish is a short one and the test processes end
#: together (with ``--maxschedchunk 1`` in ``addopts``, each process takes its next test
#: when it is free). ``slow``-marked tests not named here come next, then the rest in the
#: collection's order. Add a test here when ``--durations`` shows it among the longest.
SLOWEST_FIRST: tuple[str, ...] = (  # the longest at -n 4 on 2 cores, longest first
    # the README's longest thread, which builds the quick start the others start from
    "tests/test_readme.py::test_every_shell_block_of_the_readme_runs_in_order[firearms-sqlite]",
    "tests/test_journey.py::test_quick_start_grid_search_repeats_compare_report_export_dashboard",
    "tests/test_study_identity.py::test_a_changed_identity_is_refused_naming_the_key",
    "tests/test_pool.py::test_the_database_unreachable_mid_study_behind_the_pool_loses_nothing",
    # the README's other threads: they wait for the quick start, so not at the very start
    # (three test processes waiting on it would leave a core idle)
    "tests/test_readme.py::test_every_shell_block_of_the_readme_runs_in_order",
    "tests/test_workers.py::test_a_worker_killed_mid_trial_is_reclaimed_by_the_others",
    "tests/test_pool.py::test_six_workers_through_four_connections_finish_the_grid_exactly_once",
    "tests/test_packing.py::test_two_workers_share_a_gpu_under_their_own_names",
    "tests/test_study_identity.py::test_a_search_after_the_grid_starts_from_the_grid_on_sqlite",
    "tests/test_reliability.py::test_a_live_trial_falsely_failed_as_stale_keeps_its_result",
    "tests/test_steps.py::test_a_trial_on_reused_steps_trains_exactly_as_a_fresh_compile",
    "tests/test_reliability.py::"
    "test_the_database_unreachable_for_ten_seconds_mid_trial_loses_nothing",
    "tests/test_study_identity.py::"
    "test_a_search_after_the_grid_starts_from_the_grid_on_postgresql",
    "tests/test_reliability.py::test_every_connection_terminated_mid_trial_loses_nothing",
    "tests/test_pool.py::"
    "test_hpo_worker_processes_behind_a_pgbouncer_in_transaction_mode_share_it",
    "tests/test_crash.py::test_ctrl_c_fails_the_running_trial_cleanly_and_resume_reruns_it",
    "tests/test_crash.py::test_kill_9_leaves_no_trial_running_forever",
    "tests/test_pool.py::test_a_worker_killed_behind_the_pool_is_reaped_and_its_point_run_again",
    "tests/test_reliability.py::"
    "test_a_paused_worker_that_resumes_after_its_retry_was_taken_adds_no_second_result",
    "tests/test_budget.py::test_n_trials_is_the_total_of_a_run_of_several_workers",
)


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """``-n auto``: two test processes per core (``--maxprocesses`` caps them at 4). Most
    tests spend their time waiting on ``hpo`` subprocesses (a heartbeat, a grace period, a
    database outage): at one process per core, a quarter of CI's two cores sat idle (the
    suite took 688 s at ``-n 2``, 631 s at ``-n 4``, on a 2-core machine). The
    ``PYTEST_XDIST_AUTO_NUM_WORKERS`` variable still decides where it is set."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None  # pytest-xdist's own hook reads it
    return 2 * len(os.sched_getaffinity(0))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Orders :data:`SLOWEST_FIRST`, then the other ``slow`` tests, then the rest."""
    def rank(item: pytest.Item) -> tuple[int, int]:
        for at, name in enumerate(SLOWEST_FIRST):
            if item.nodeid == name or item.nodeid.startswith(name + "["):
                return (0, at)
        return (1, 0) if item.get_closest_marker("slow") else (2, 0)

    items.sort(key=rank)  # stable: the collection's order within each rank
