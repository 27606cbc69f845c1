"""The private connection pool of ``hpo run --workers N`` on PostgreSQL (issue 29): the
workers of a host share ``--pool-size`` server connections through a PgBouncer the
supervisor starts, exactly-once, reaping, outages and signals hold through it, and nothing
(no PgBouncer, no password on disk) outlives the run."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Iterator

import optuna
import pytest
from optuna.trial import TrialState

from hpo.execution._pool import PGBOUNCER_PORT, pool_config, pooled_url, start_pool
from hpo.testing import write_study
from tests.conftest import ended, run_cli, run_here, wait_for_training
from tests.tcp_proxy import CuttableProxy

PGBOUNCER = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/sbin")
needs_pgbouncer = pytest.mark.skipif(
    PGBOUNCER is None, reason="the pgbouncer program is not installed (apt-get install "
                              "pgbouncer); the pool falls back to direct connections")
SECRET = "Pool-Secret-7f3e"

#: The subject here is processes and storage, not the backend: the hpo processes train on
#: JAX, which starts faster (tests/conftest.py, ``_keras_backend_of_the_test``).
pytestmark = pytest.mark.keras_backend("jax")


def _points(trials: list[optuna.trial.FrozenTrial]) -> list[tuple]:
    return [tuple(sorted(t.params.items())) for t in trials]


def _pgbouncers() -> dict[int, str]:
    """pid -> command line of every PgBouncer of this machine's hpo pools."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if args and args[0].endswith(b"pgbouncer") and b"hpo-pool-" in b" ".join(args):
            found[int(entry.name)] = b" ".join(args).decode(errors="replace")
    return found


def _parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def _pool_of(supervisor: int) -> dict[int, Path]:
    """The PgBouncer a supervisor started (through its watcher): pid -> its folder. Tests
    running at once each see only their own."""
    return {pid: Path(line.split()[-1]).parent for pid, line in _pgbouncers().items()
            if _parent(_parent(pid)) == supervisor}


def _children(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                kids.append(int(entry.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_until(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} after {timeout} s"
        time.sleep(0.2)


@pytest.fixture()
def limited_role(postgres_url: str) -> Iterator[tuple[str, str]]:
    """A role allowed 4 connections, with a password, owning a database of its own
    (:func:`_database_of`: a name that is no plain word): (its URL, its name). Dropped after
    the test."""
    import sqlalchemy

    role = f"hpo_pool_{uuid.uuid4().hex[:8]}"
    admin = sqlalchemy.create_engine(postgres_url, isolation_level="AUTOCOMMIT",
                                     poolclass=sqlalchemy.pool.NullPool)
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(
            f"CREATE ROLE {role} LOGIN CONNECTION LIMIT 4 PASSWORD '{SECRET}'"))
        conn.execute(sqlalchemy.text(f'CREATE DATABASE "{_database_of(role)}" OWNER {role}'))
    url = sqlalchemy.engine.make_url(postgres_url).set(
        username=role, password=SECRET, database=_database_of(role)).render_as_string(
        hide_password=False)
    from hpo.storage import close_storage, open_storage

    close_storage(open_storage(url))  # Optuna's tables, the role's (the test reads as admin)
    try:
        yield url, role
    finally:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(
                f'DROP DATABASE IF EXISTS "{_database_of(role)}" WITH (FORCE)'))
            conn.execute(sqlalchemy.text(f"DROP ROLE IF EXISTS {role}"))
        admin.dispose()


def _database_of(role: str) -> str:
    """The database of :func:`limited_role`'s role: a name with a space, a dash, a dot and
    letters beyond ASCII. PgBouncer 1.18's configuration parser takes no quoted key: such a
    name (``hpo-studies``, ``Ünï``) stopped it from starting, and every worker connected
    directly after a 'did not start (... cannot load config file)' line; the six-worker
    run below checks that the pool started."""
    return f"{role} pool-Ünï.db"


def _admin_url(postgres_url: str, role: str) -> str:
    """The URL of ``role``'s database (:func:`_database_of`) as the server's admin."""
    import sqlalchemy

    return sqlalchemy.engine.make_url(postgres_url).set(
        database=_database_of(role)).render_as_string(hide_password=False)


class _PeakConnections:
    """Polls pg_stat_activity for the most connections ``role`` held at once."""

    def __init__(self, postgres_url: str, role: str) -> None:
        import sqlalchemy

        self.peak = 0
        self._stop = threading.Event()
        self._engine = sqlalchemy.create_engine(postgres_url, poolclass=sqlalchemy.pool.NullPool)
        self._query = sqlalchemy.text(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = :r")
        self._role = role
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        with self._engine.connect() as conn:
            while not self._stop.wait(0.1):
                count = conn.execute(self._query, {"r": self._role}).scalar_one()
                conn.rollback()
                self.peak = max(self.peak, int(count))

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(timeout=10)
        self._engine.dispose()
        return self.peak


def _run(study_file: Path, storage: str, cwd: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "hpo", "run", "--study", str(study_file), *extra],
        cwd=cwd, env={**os.environ, "HPO_STORAGE": storage}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True)


def _two_pooled_workers(tmp_path: Path, image_folder: Path, postgres_url: str,
                        limited_role: tuple[str, str], prefix: str, epochs: int,
                        *extra: str) -> tuple[subprocess.Popen[str], str, str]:
    """``hpo run --workers 2 --pool-size 4 --quiet --no-figures`` as the limited role, on a
    study of its own (``epochs`` a trial): the run, the study's name, the admin's URL."""
    url, role = limited_role
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    study_file = write_study(tmp_path / "s.toml", data=image_folder, name=name, epochs=epochs)
    proc = _run(study_file, url, tmp_path, "--workers", "2", "--pool-size", "4", "--quiet",
                "--no-figures", *extra)
    return proc, name, _admin_url(postgres_url, role)


def _kill_if_running(proc: subprocess.Popen[str]) -> None:
    """A test's last word on its ``hpo run``: killed with its workers if it still runs."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()


# -- unit: the configuration, the URL, the fallback ------------------------------------------


def test_the_pool_configuration_pools_transactions_on_a_private_socket(tmp_path):
    ini, users = pool_config(f"postgresql://alice:{SECRET}@db.lab:5433/hpo", 4, tmp_path,
                             outage_timeout=600)
    lines = dict(line.split(" = ", 1) for line in ini.splitlines() if " = " in line)
    assert lines["pool_mode"] == "transaction"
    assert lines["listen_addr"] == ""  # no TCP port
    assert lines["unix_socket_dir"] == str(tmp_path)
    assert lines["default_pool_size"] == lines["max_db_connections"] == "4"
    assert lines["auth_type"] == "trust"
    assert int(lines["query_wait_timeout"]) > 600  # hpo's outage handling waits first
    assert lines["server_login_retry"] == "1"
    # PgBouncer's fallback entry, whatever the database's name (see the odd-name test)
    assert lines["*"] == (f"host='db.lab' port='5433' dbname='hpo' user='alice' "
                          f"password='{SECRET}'")
    assert ini.count(SECRET) == 1 and SECRET not in users
    assert users == '"alice" ""\n'
    quoted, _ = pool_config("postgresql://bob:it's@localhost/db", 3, tmp_path)
    assert "password='it''s'" in quoted


def test_the_pool_logs_in_with_the_password_libpq_would_find(tmp_path, monkeypatch):
    # a URL without its password (PGPASSWORD, ~/.pgpass): the supervisor, connecting
    # directly, got in; PgBouncer reads neither, and every worker failed 'authentication
    # failed' behind it
    def server_entry(url: str) -> str:
        ini, _ = pool_config(url, 4, tmp_path)
        return dict(line.split(" = ", 1) for line in ini.splitlines() if " = " in line)["*"]

    for name in ("PGPASSWORD", "PGUSER", "PGHOST", "PGPORT", "PGDATABASE"):
        monkeypatch.delenv(name, raising=False)
    pgpass = tmp_path / "pgpass"
    monkeypatch.setenv("PGPASSFILE", str(pgpass))
    monkeypatch.setenv("PGPASSWORD", SECRET)
    assert f"user='alice' password='{SECRET}'" in server_entry("postgresql://alice@db.lab/hpo")
    monkeypatch.delenv("PGPASSWORD")
    pgpass.write_text("other:5432:*:alice:nope\n"
                      "db.lab:*:hpo:alice:it\\:s-mine\n"
                      "*:*:*:*:catch-all\n")
    pgpass.chmod(0o600)
    assert "password='it:s-mine'" in server_entry("postgresql://alice@db.lab/hpo")
    assert "password='catch-all'" in server_entry("postgresql://bob@db.lab/hpo")
    pgpass.chmod(0o644)  # libpq ignores a password file others may read
    assert "password=" not in server_entry("postgresql://alice@db.lab/hpo")
    monkeypatch.setenv("PGUSER", "carol")  # no user in the URL: libpq's, in both files
    ini, users = pool_config("postgresql://db.lab/hpo", 4, tmp_path)
    assert "user='carol'" in ini and users == '"carol" ""\n'


def test_a_password_in_the_urls_query_logs_the_pool_in_and_is_never_shown(tmp_path):
    # libpq's 'postgresql://host/db?user=u&password=p': the pool logged in as the login
    # name with no password (every worker failed '"trust" authentication failed'), and the
    # password stood in the workers' URL and in every 'storage ...' line
    from hpo.storage import mask_url

    url = f"postgresql://db.lab:5433/hpo?user=alice&password={SECRET}&sslmode=require"
    ini, users = pool_config(url, 4, tmp_path)
    assert f"user='alice' password='{SECRET}'" in ini and users == '"alice" ""\n'
    assert SECRET not in pooled_url(url, tmp_path)
    assert SECRET not in mask_url(url) and "password=***" in mask_url(url)
    assert mask_url(f"postgresql://h/db?password={SECRET}") == "postgresql://h/db?password=***"


def test_the_pool_reaches_postgresql_over_tls_as_the_url_asks(tmp_path, monkeypatch):
    # PgBouncer's default is no TLS to the server: sslmode=require went unencrypted (and a
    # server that accepts only TLS refused every worker)
    def settings(url: str) -> dict[str, str]:
        ini, _ = pool_config(url, 4, tmp_path)
        return dict(line.split(" = ", 1) for line in ini.splitlines() if " = " in line)

    for name in ("PGSSLMODE", "PGSSLROOTCERT", "PGSSLCERT", "PGSSLKEY"):
        monkeypatch.delenv(name, raising=False)
    assert settings("postgresql://a:b@db/hpo")["server_tls_sslmode"] == "prefer"  # libpq's
    monkeypatch.setenv("PGSSLMODE", "require")  # libpq's environment, when the URL is silent
    assert settings("postgresql://a:b@db/hpo")["server_tls_sslmode"] == "require"
    assert settings("postgresql://a:b@db/hpo?sslmode=disable")["server_tls_sslmode"] == "disable"
    monkeypatch.delenv("PGSSLMODE")
    required = settings("postgresql://a:b@db/hpo?sslmode=require")
    assert required["server_tls_sslmode"] == "require"
    assert "server_tls_ca_file" not in required
    verified = settings("postgresql://a:b@db/hpo?sslmode=verify-full&sslrootcert=/etc/ca.pem")
    assert verified["server_tls_sslmode"] == "verify-full"
    assert verified["server_tls_ca_file"] == "/etc/ca.pem"


def test_the_workers_url_leads_to_the_socket_without_the_password(tmp_path):
    url = pooled_url(f"postgresql+psycopg://alice:{SECRET}@db.lab:5433/hpo?sslmode=require",
                     tmp_path)
    assert SECRET not in url
    import sqlalchemy

    parsed = sqlalchemy.engine.make_url(url)
    assert parsed.drivername == "postgresql+psycopg"
    assert (parsed.username, parsed.host, parsed.database) == ("alice", None, "hpo")
    assert parsed.query == {"host": str(tmp_path), "port": str(PGBOUNCER_PORT)}


def test_without_pgbouncer_the_workers_connect_directly_with_one_line(monkeypatch, caplog):
    from hpo.execution import _pool

    monkeypatch.setattr(_pool.shutil, "which", lambda *args, **kwargs: None)
    with caplog.at_level(logging.INFO):
        assert start_pool("postgresql://u:p@127.0.0.1/db", 4) is None
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1, lines
    assert "'pgbouncer' program is not installed" in lines[0]
    assert "apt-get install pgbouncer" in lines[0] and "--pool-size 0" in lines[0]
    caplog.clear()
    assert start_pool("postgresql://u:p@127.0.0.1/db", 0) is None  # asked for none
    assert start_pool("sqlite:///x.db", 4) is None  # nothing to share
    assert not caplog.records


def test_a_url_with_options_is_not_pooled_with_one_line(caplog):
    # PgBouncer drops the startup 'options': behind it the workers ran without them
    with caplog.at_level(logging.INFO):
        assert start_pool(f"postgresql://u:{SECRET}@127.0.0.1/db?options=-csearch_path%3Dx",
                          4) is None
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1, lines
    assert "'options'" in lines[0] and "directly" in lines[0] and SECRET not in lines[0]


@pytest.mark.parametrize("hosts", ["host=h1:5432&host=h2:5433", "host=h1,h2&port=5432,5433"])
def test_a_url_with_several_hosts_is_not_pooled_with_one_line(caplog, hosts):
    # PgBouncer got "('h1:5432', 'h2:5433')" as one host name: the pool started, and every
    # worker waited for a server that never answered
    with caplog.at_level(logging.INFO):
        assert start_pool(f"postgresql://u:{SECRET}@/db?{hosts}", 4) is None
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "several hosts" in lines[0], lines


@needs_pgbouncer
@pytest.mark.postgres
def test_the_workers_keep_the_search_path_of_the_urls_options(tmp_path, image_folder,
                                                               postgres_url):
    """Through the pool, '?options=-csearch_path=S' was dropped: the supervisor made the
    study in schema S, the workers made Optuna's tables and the study again in 'public'
    and ran their trials there ('no trial has completed yet')."""
    import sqlalchemy

    schema = f"hpo_opt_{uuid.uuid4().hex[:8]}"
    admin = sqlalchemy.create_engine(postgres_url, isolation_level="AUTOCOMMIT",
                                     poolclass=sqlalchemy.pool.NullPool)
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f"CREATE SCHEMA {schema}"))
    url = sqlalchemy.engine.make_url(postgres_url).update_query_dict(
        {"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)
    name = f"poolopt-{uuid.uuid4().hex[:8]}"
    study_file = write_study(tmp_path / "s.toml", data=image_folder, name=name)
    try:
        result = run_cli("run", "--study", str(study_file), "--storage", url, "--workers", "2",
                         "--n-trials", "2", "--no-figures", "--keep-models", "0", cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        with admin.connect() as conn:
            done = conn.execute(sqlalchemy.text(
                f"SELECT count(*) FROM {schema}.trials t JOIN {schema}.studies s "
                f"USING (study_id) WHERE s.study_name = :n AND t.state = 'COMPLETE'"),
                {"n": name}).scalar_one()
        assert done == 2, result.stderr[-3000:]
    finally:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        admin.dispose()


@needs_pgbouncer
@pytest.mark.parametrize("kind", ["private", "long"])
def test_the_pool_starts_whatever_the_temporary_folder(tmp_path, monkeypatch, kind):
    # run as root with a private TMPDIR (0700), PgBouncer ('nobody') could not reach its
    # folder; under a long TMPDIR its socket's path passed 107 bytes: either way it did not
    # start ('cannot load config file') and the workers connected directly
    if kind == "private":
        if os.geteuid() != 0:
            pytest.skip("PgBouncer runs as another user only when hpo runs as root")
        temp = tmp_path / "private"
        temp.mkdir(mode=0o700)
    else:
        temp = tmp_path / ("x" * 60) / ("y" * 40)
        temp.mkdir(parents=True)
    monkeypatch.setenv("TMPDIR", str(temp))
    pool = start_pool("postgresql://u:p@127.0.0.1:1/db", 4)
    assert pool is not None
    try:
        assert str(temp) not in pool.url
    finally:
        pool.close()
    assert not list(temp.iterdir())


def test_a_pool_too_small_for_a_claim_is_refused(tiny_study):
    result = run_here("run", "--study", str(tiny_study), "--workers", "2", "--pool-size", "3")
    assert result.returncode == 2
    assert "--pool-size" in result.stderr and "at least 4" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("size", ["2147483648", "99999999999999999999999"])
def test_a_pool_too_big_for_pgbouncer_is_refused(tiny_study, size):
    # PgBouncer took 2**31 and more as a pool that never hands out a connection: the
    # workers waited for one forever
    result = run_here("run", "--study", str(tiny_study), "--workers", "2", "--pool-size", size,
                      "--storage", "postgresql://u:Pw-Secret@127.0.0.1:1/db")
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == [
        f"hpo: error: --pool-size must be 0 (direct connections) or from 4 to 262143 "
        f"connections, received {size}"]
    assert "Pw-Secret" not in result.stdout + result.stderr


# -- the user's path: real PostgreSQL, real processes ----------------------------------------


@needs_pgbouncer
@pytest.mark.postgres
def test_six_workers_through_four_connections_finish_the_grid_exactly_once(
        tmp_path, image_folder, postgres_url, limited_role):
    url, role = limited_role
    name = f"pool6-{uuid.uuid4().hex[:8]}"
    study_file = write_study(tmp_path / "s.toml", data=image_folder, name=name,
                             extra_grid="batch_size = [8, 16]")
    peak = _PeakConnections(postgres_url, role)
    # more workers than the pool's connections (its least size is 4), fewer than points
    proc = _run(study_file, url, tmp_path, "--workers", "6", "--pool-size", "4",
                "--no-figures", "--keep-models", "0")
    try:
        wait_for_training(name, _admin_url(postgres_url, role), proc, timeout=300)
        # running: the password is in no file of the pool's folder (nor anywhere in /tmp's
        # hpo folders), and PgBouncer runs on a socket only
        ours = _pool_of(proc.pid)
        assert len(ours) == 1, ours
        folder = next(iter(ours.values()))
        for path in folder.rglob("*"):
            if path.is_file():
                assert SECRET.encode() not in path.read_bytes(), path
        out, err = ended(proc, 900)
    finally:
        _kill_if_running(proc)
        most = peak.stop()
    assert proc.returncode == 0, err[-3000:]
    assert "sharing 4 database connections through PgBouncer" in err + out
    assert "did not start" not in err, err[-3000:]
    assert SECRET not in out + err
    assert most <= 4
    study = optuna.load_study(study_name=name, storage=_admin_url(postgres_url, role))
    points = _points(study.get_trials(states=(TrialState.COMPLETE,)))
    assert len(points) == len(set(points)) == 8
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
    assert not any(_alive(pid) for pid in ours) and not folder.exists()
    names = {t.user_attrs["worker"]["name"] for t in study.trials}
    assert names <= {f"cpu{i}" for i in range(6)} and len(names) >= 2, names
    status = run_here("status", str(study_file), "--storage", _admin_url(postgres_url, role),
                      cwd=tmp_path)
    assert "grid: 8 points: 8 done, 0 running, 0 failed, 0 left" in status.stdout, status


@needs_pgbouncer
@pytest.mark.postgres
def test_a_worker_killed_behind_the_pool_is_reaped_and_its_point_run_again(
        tmp_path, image_folder, postgres_url, limited_role):
    proc, name, admin = _two_pooled_workers(tmp_path, image_folder, postgres_url, limited_role,
                                            "poolkill", 12, "--heartbeat", "1", "--grace", "3")
    try:
        victim = wait_for_training(name, admin, proc, timeout=300)
        ours = _pool_of(proc.pid)
        assert len(ours) == 1, ours
        os.kill(int(victim.user_attrs["worker"]["pid"]), signal.SIGKILL)
        out, err = ended(proc, 900)
    finally:
        _kill_if_running(proc)
    assert proc.returncode == 128 + signal.SIGKILL, err[-3000:]
    study = optuna.load_study(study_name=name, storage=admin)
    assert study.trials[victim.number].state == TrialState.FAIL
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    points = _points(complete)
    assert len(points) == len(set(points)) == 4
    assert victim.params in [t.params for t in complete]
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
    assert not any(_alive(pid) for pid in ours)  # stopped before the supervisor ended


@needs_pgbouncer
@pytest.mark.postgres
def test_the_database_unreachable_mid_study_behind_the_pool_loses_nothing(
        tmp_path, image_folder, postgres_url, limited_role):
    import sqlalchemy

    url, role = limited_role
    parsed = sqlalchemy.engine.make_url(url)
    proxy = CuttableProxy(parsed.host or "127.0.0.1", parsed.port or 5432)
    through_proxy = parsed.set(host="127.0.0.1", port=proxy.port).render_as_string(
        hide_password=False)
    admin = _admin_url(postgres_url, role)
    name = f"poolout-{uuid.uuid4().hex[:8]}"
    study_file = write_study(tmp_path / "s.toml", data=image_folder, name=name, epochs=6)
    proc = _run(study_file, through_proxy, tmp_path, "--workers", "3", "--pool-size", "4",
                "--heartbeat", "1", "--grace", "60", "--no-figures")
    try:
        wait_for_training(name, admin, proc, min_epochs=2, timeout=300)
        ours = _pool_of(proc.pid)
        assert len(ours) == 1, ours
        dropped = proxy.cut()
        time.sleep(8)
        proxy.restore()
        out, err = ended(proc, 900)
    finally:
        _kill_if_running(proc)
        proxy.close()
    assert dropped >= 1
    assert proc.returncode == 0, err[-3000:]
    assert SECRET not in out + err
    study = optuna.load_study(study_name=name, storage=admin)
    points = _points(study.get_trials(states=(TrialState.COMPLETE,)))
    assert len(points) == len(set(points)) == 4  # lost: 0, duplicates: 0
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
    assert not any(_alive(pid) for pid in ours)  # stopped before the supervisor ended


@needs_pgbouncer
@pytest.mark.postgres
def test_a_pool_killed_mid_run_stops_the_workers_at_once_with_one_line(
        tmp_path, image_folder, postgres_url, limited_role):
    """The pool's watcher killed (the OOM killer's way): its PgBouncer stops, and the
    workers could reach the database no more; they are stopped at once with one line (they
    waited out the whole outage timeout, then failed 'check the server'), what they left
    RUNNING is failed and re-queued, and the pool's folder goes."""
    proc, name, admin = _two_pooled_workers(tmp_path, image_folder, postgres_url, limited_role,
                                            "poollost", 25, "--outage-timeout", "600")
    workers: list[int] = []
    try:
        wait_for_training(name, admin, proc, timeout=300)
        workers = _children(proc.pid)
        (bouncer, folder), = _pool_of(proc.pid).items()
        os.kill(_parent(bouncer), signal.SIGKILL)  # its watcher
        out, err = ended(proc, 120)  # not the 600 s outage timeout
    finally:
        for pid in workers:  # in sessions of their own, holding the output's pipes
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        _kill_if_running(proc)
    assert proc.returncode != 0
    lines = [line for line in err.splitlines() if "connection pool" in line]
    assert len(lines) == 1 and "ended while workers ran" in lines[0], err[-3000:]
    assert "run the same command again" in lines[0]
    assert "Traceback" not in err and SECRET not in out + err
    _wait_until(lambda: not _alive(bouncer), 30, "its PgBouncer still runs")
    assert not folder.exists()
    study = optuna.load_study(study_name=name, storage=admin)
    assert not study.get_trials(states=(TrialState.RUNNING,))
    assert study.get_trials(states=(TrialState.FAIL,))
    assert study.get_trials(states=(TrialState.WAITING,))  # each failed point re-queued


@needs_pgbouncer
@pytest.mark.postgres
def test_kill_9_of_the_supervisor_stops_its_workers_then_its_pgbouncer(
        tmp_path, image_folder, postgres_url, limited_role):
    proc, name, admin = _two_pooled_workers(tmp_path, image_folder, postgres_url, limited_role,
                                            "poolsup", 25)
    try:
        wait_for_training(name, admin, proc, timeout=300)
        workers = _children(proc.pid)
        ours = _pool_of(proc.pid)
        assert len(ours) == 1, ours
        (bouncer, folder), = ours.items()
        assert folder.is_dir()
        os.kill(proc.pid, signal.SIGKILL)
        ended(proc, 60)
        _wait_until(lambda: not any(_alive(pid) for pid in workers), 120,
                    "a worker still runs")
        _wait_until(lambda: not _alive(bouncer), 30, "its PgBouncer still runs")
        _wait_until(lambda: not folder.exists(), 10, "the pool's folder is still there")
    finally:
        _kill_if_running(proc)
    study = optuna.load_study(study_name=name, storage=admin)
    assert not study.get_trials(states=(TrialState.RUNNING,))  # stopped: FAIL, not lost
    assert study.get_trials(states=(TrialState.FAIL,))


@needs_pgbouncer
@pytest.mark.postgres
def test_hpo_worker_processes_behind_a_pgbouncer_in_transaction_mode_share_it(
        tmp_path, image_folder, postgres_url, limited_role):
    """docs/cluster.md's path for job schedulers: 'hpo worker' processes pointed at a
    PgBouncer in transaction mode (here the private pool's, started by hand) with
    HPO_POOLED=1 run the grid exactly once through the role's 4 connections."""
    url, role = limited_role
    name = f"poolwk-{uuid.uuid4().hex[:8]}"
    study_file = write_study(tmp_path / "s.toml", data=image_folder, name=name)
    pool = start_pool(url, 4)
    assert pool is not None
    try:
        procs = [subprocess.Popen(
            [sys.executable, "-m", "hpo", "worker", "--study", str(study_file), "--quiet",
             "--no-figures", "--keep-models", "0", "--worker-name", f"w{i}"],
            cwd=tmp_path, env={**os.environ, "HPO_STORAGE": pool.url, "HPO_POOLED": "1"},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(3)]
        results = [ended(proc, 600) for proc in procs]
    finally:
        pool.close()
    assert [proc.returncode for proc in procs] == [0, 0, 0], results
    study = optuna.load_study(study_name=name, storage=_admin_url(postgres_url, role))
    points = _points(study.get_trials(states=(TrialState.COMPLETE,)))
    assert len(points) == len(set(points)) == 4
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
    assert pool.watcher.returncode == 0
