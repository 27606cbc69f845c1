"""Many workers, few database connections (issue 29): N worker processes on one grid through
a private PgBouncer whose PostgreSQL role is limited to far fewer connections than N,
beside N' workers connecting directly (a role with no limit), side by side in one run.

Each worker is hpo's worker loop (``hpo.execution._loop.run_trials``: study lock, reaping,
grid claim, ask, the trial's records in three writes, tell) with the coordination
benchmark's objective that trains nothing (``benchmarks/coordination_scale.py``), so every
second measured is coordination. The pool is the one ``hpo run --workers N`` starts
(:func:`hpo.execution._pool.start_pool`); its workers get its URL and ``HPO_POOLED=1``, as
``hpo run``'s do. For each case it reports:

* exactly-once: every grid point COMPLETE once, nothing left RUNNING or WAITING;
* the peak of the role's server connections (``pg_stat_activity``, polled every 50 ms);
* wall seconds from the moment every worker is ready until the grid is done, and that per
  trial (the study's coordination throughput), and the median per-worker gap between its
  consecutive trials' starts (what one trial costs a worker while N share the study).

    python benchmarks/connection_pool.py --workers 60 --limit 10 --direct-workers 25 \\
        --out benchmarks/results/connection_pool.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from coordination_scale import STUDY  # noqa: E402  (the same no-training grid)


def _worker(url: str, study_file: str, go_file: str) -> None:
    """One worker: opens the study, says ready, waits for the go, runs the grid's trials."""
    from coordination_scale import _Instant

    from hpo.config import SearchSettings, load_study_config
    from hpo.execution._loop import grid_claims, run_trials
    from hpo.reporting import Reporter
    from hpo.storage import StorageOptions, close_storage, open_storage
    from hpo.study import open_study

    starts: list[float] = []

    class Instant(_Instant):
        def compiled_for(self, point: Any) -> bool:
            return False

        def __call__(self, trial: Any, recorder: Any = None) -> float:
            starts.append(time.monotonic())
            return super().__call__(trial, recorder)

    config = load_study_config(study_file)
    storage = open_storage(url, StorageOptions(heartbeat_interval=60))
    study = open_study(config, storage, sampler="grid", study_name=config.name)
    print("ready", flush=True)
    while not os.path.exists(go_file):
        time.sleep(0.05)
    search = SearchSettings(study=config.name, sampler="grid", study_name=config.name)
    run_trials(study, grid_claims(study, config, search), Instant(sample=False), search,
               Reporter(metric="val_accuracy", quiet=True))
    close_storage(storage)
    print(json.dumps([b - a for a, b in zip(starts, starts[1:])]), flush=True)


class _Peak:
    def __init__(self, admin: str, role: str) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._engine = sqlalchemy.create_engine(admin, poolclass=sqlalchemy.pool.NullPool)
        self._role = role
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        query = sqlalchemy.text("SELECT count(*) FROM pg_stat_activity WHERE usename = :r")
        with self._engine.connect() as conn:
            while not self._stop.wait(0.05):
                self.peak = max(self.peak, int(conn.execute(query, {"r": self._role})
                                               .scalar_one()))
                conn.rollback()

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(timeout=10)
        self._engine.dispose()
        return self.peak


def _case(admin: str, workers: int, limit: int | None, pool_size: int, points: int,
          folder: Path) -> dict[str, Any]:
    """One case: a fresh role (``limit`` connections, None: no limit) and database, a grid
    of ``points``, ``workers`` processes, through a pool of ``pool_size`` (0: direct)."""
    import optuna
    from optuna.trial import TrialState

    from hpo.execution._pool import start_pool
    from hpo.storage import close_storage, open_storage

    role = f"hpo_bench_{uuid.uuid4().hex[:8]}"
    engine = sqlalchemy.create_engine(admin, isolation_level="AUTOCOMMIT",
                                      poolclass=sqlalchemy.pool.NullPool)
    with engine.connect() as conn:
        conn.execute(sqlalchemy.text(
            f"CREATE ROLE {role} LOGIN PASSWORD 'bench' CONNECTION LIMIT "
            f"{-1 if limit is None else limit}"))
        conn.execute(sqlalchemy.text(f'CREATE DATABASE "{role}" OWNER {role}'))
    base = sqlalchemy.engine.make_url(admin)
    url = base.set(username=role, password="bench", database=role).render_as_string(
        hide_password=False)
    watch = base.set(database=role).render_as_string(hide_password=False)
    rates = ", ".join(f"{10 ** (-5 + 4 * i / max(1, points // 24 - 1)):.6g}"
                      for i in range(points // 24))
    name = f"pool-{workers}-{pool_size}"
    study_file = folder / f"{name}.toml"
    study_file.write_text(STUDY.format(name=name, rates=rates, batches="16, 32, 64"))
    close_storage(open_storage(url))  # the schema, once
    pool = start_pool(url, pool_size) if pool_size else None
    worker_url = url if pool is None else pool.url
    env = {**os.environ, **({} if pool is None else pool.worker_env())}
    go = folder / f"{name}.go"
    peak = _Peak(watch, role)
    code = ("import sys; sys.path.insert(0, sys.argv[4]); import connection_pool; "
            "connection_pool._worker(*sys.argv[1:4])")
    procs = [subprocess.Popen([sys.executable, "-c", code, worker_url, str(study_file),
                               str(go), str(ROOT / "benchmarks")],
                              env=env, stdout=subprocess.PIPE, text=True,
                              pass_fds=() if pool is None else (pool.keep_fd,))
             for _ in range(workers)]
    started_at = time.monotonic()
    for proc in procs:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready", "a worker did not start"
    ready_s = time.monotonic() - started_at
    go.touch()
    start = time.monotonic()
    outputs = [proc.communicate()[0] for proc in procs]
    wall = time.monotonic() - start
    codes = [proc.returncode for proc in procs]
    most = peak.stop()
    if pool is not None:
        pool.close()
    study = optuna.load_study(study_name=name, storage=watch)
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    keys = [tuple(sorted(t.params.items())) for t in complete]
    gaps: list[float] = []
    busy = 0
    for out in outputs:
        lines = out.strip().splitlines()
        if lines and lines[-1].startswith("["):
            worker_gaps = json.loads(lines[-1])
            gaps += worker_gaps
            busy += bool(worker_gaps)
    with engine.connect() as conn:
        conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{role}" WITH (FORCE)'))
        conn.execute(sqlalchemy.text(f"DROP ROLE IF EXISTS {role}"))
    engine.dispose()
    return {
        "workers": workers, "connection_limit": limit, "pool_size": pool_size,
        "pooled": pool is not None, "grid_points": points, "exit_codes_nonzero":
        sum(1 for c in codes if c != 0),
        "complete": len(complete), "distinct_points": len(set(keys)),
        "left_running": sum(1 for t in trials if t.state == TrialState.RUNNING),
        "left_waiting": sum(1 for t in trials if t.state == TrialState.WAITING),
        "failed": sum(1 for t in trials if t.state == TrialState.FAIL),
        "exactly_once": len(complete) == len(set(keys)) == points,
        "peak_server_connections": most, "start_s": round(ready_s, 1),
        "wall_s": round(wall, 2), "wall_ms_per_trial": round(1000 * wall / max(1, points), 1),
        "worker_gap_ms_median": round(1000 * statistics.median(gaps), 1) if gaps else None,
        "workers_with_two_trials_or_more": busy,
    }


def main() -> None:
    from study_throughput import _cpu_model

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--postgres", default=os.environ.get("HPO_TEST_POSTGRES_URL"),
                        help="an admin URL of the PostgreSQL server (creates roles)")
    parser.add_argument("--workers", type=int, default=60, help="N: pooled workers")
    parser.add_argument("--limit", type=int, default=10,
                        help="the pooled role's CONNECTION LIMIT (the pool's size)")
    parser.add_argument("--direct-workers", type=int, default=25,
                        help="workers connecting directly (each holds ~3 connections: a "
                             "stock max_connections of 100 serves ~30)")
    parser.add_argument("--points", type=int, default=240, help="grid points (24 per rate)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if not args.postgres:
        parser.error("pass --postgres URL or set HPO_TEST_POSTGRES_URL")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        cases = [
            _case(args.postgres, args.workers, args.limit, args.limit, args.points, folder),
            _case(args.postgres, args.direct_workers, args.limit, args.limit, args.points,
                  folder),
            _case(args.postgres, args.direct_workers, None, 0, args.points, folder),
        ]
    engine = sqlalchemy.create_engine(args.postgres, poolclass=sqlalchemy.pool.NullPool)
    with engine.connect() as conn:
        server = conn.execute(sqlalchemy.text("SHOW server_version")).scalar_one()
        max_conn = conn.execute(sqlalchemy.text("SHOW max_connections")).scalar_one()
    engine.dispose()
    pgbouncer = subprocess.run(["pgbouncer", "--version"], capture_output=True, text=True,
                               check=False).stdout.splitlines()[:1]
    result = {"machine": {"cpu": _cpu_model(), "cores": os.cpu_count(),
                          "python": platform.python_version(),
                          "postgresql": server, "max_connections": max_conn,
                          "pgbouncer": pgbouncer[0] if pgbouncer else None},
              "cases": cases}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
