"""A private PgBouncer per ``hpo run`` host: its workers share a bounded set of database
connections (``pool_size``) instead of holding about 2.7 each.

``hpo run --workers N`` / ``--gpus`` on a PostgreSQL URL starts, before its workers, a small
watcher process (``python -c ...watcher_main()``, in a session of its own) that owns a
PgBouncer (Debian's ``pgbouncer``):

* **transaction pooling**, ``pool_size`` server connections at most
  (``default_pool_size`` = ``max_db_connections``): a worker holds a server connection only
  for the length of a transaction. hpo keeps no session state on its connections (its locks
  are transaction-scoped: :mod:`hpo.storage._locks`) and pooled workers prepare no
  statements (:data:`hpo.storage.POOLED_ENV`);
* it listens only on a Unix socket in a fresh 0700 folder (no TCP port), trusting whoever
  reaches it there; it logs in to PostgreSQL with the URL's user and password, which stand
  in a 0600 configuration file inside that folder, deleted as soon as PgBouncer has read it.
  The password is never printed or logged;
* run as root, PgBouncer (which refuses root) runs as ``nobody``, the folder given to it.

The watcher stops PgBouncer (SIGTERM, then SIGKILL) and removes its folder once the
supervisor *and* every worker are gone, however each ended (``kill -9`` included): the
supervisor and each worker hold the write end of a pipe whose read end the watcher waits
on; the kernel closes a process's end when it dies. Workers that outlive a killed
supervisor (they stop on its death, marking their trials FAIL) still reach the database
while they stop. If the watcher itself is killed, PgBouncer gets SIGTERM from the kernel
(``PR_SET_PDEATHSIG``), and the supervisor, seeing its watcher gone, stops the workers at
once with one line (they could reach the database no more) and removes the folder.

Without the ``pgbouncer`` program the run falls back to direct connections with one line
saying how to get it (or ``pool_size`` 0 to silence it).
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from hpo.execution._signals import set_parent_death_signal
from hpo.storage import POOLED_ENV, mask_url

__all__ = ["SharedConnections", "start_pool", "pool_config", "pooled_url", "PGBOUNCER_PORT",
           "watcher_main"]

_log = logging.getLogger(__name__)
#: The port in the name of PgBouncer's socket (``.s.PGSQL.6432``); no TCP port is opened.
PGBOUNCER_PORT = 6432
#: The watcher's program (``-m hpo.execution._pool`` would import this module twice).
_WATCHER = "import sys; from hpo.execution._pool import watcher_main; sys.exit(watcher_main())"
#: Seconds PgBouncer may take to start listening.
_START_TIMEOUT_S = 20.0
#: Seconds PgBouncer may take to stop after SIGTERM before it is killed.
_STOP_TIMEOUT_S = 5.0
#: The user PgBouncer runs as when hpo runs as root (PgBouncer refuses to run as root).
_UNPRIVILEGED = "nobody"
_HOW_TO_GET = ("install it (apt-get install pgbouncer, or your system's package) to share "
               "connections between this host's workers, or pass --pool-size 0 to silence "
               "this line")


@dataclass(frozen=True)
class SharedConnections:
    """A running private PgBouncer, as the supervisor holds it.

    Attributes:
        url: The storage URL the workers use (PgBouncer's socket; no password in it).
        keep_fd: The pipe end each worker inherits (``pass_fds``); the watcher stops
            PgBouncer once every holder has closed it.
        watcher: The watcher process.
        size: Server connections at most.
        folder: The pool's folder (PgBouncer's socket and files), which the watcher removes.
    """

    url: str
    keep_fd: int
    watcher: subprocess.Popen[bytes]
    size: int
    folder: Path

    def worker_env(self) -> dict[str, str]:
        """What a worker's environment adds: it is pooled (no prepared statements)."""
        return {POOLED_ENV: "1"}

    def forget(self) -> None:
        """After the watcher ended before the workers (killed: PgBouncer then gets SIGTERM
        from the kernel), removes the folder it could not."""
        shutil.rmtree(self.folder, ignore_errors=True)

    def close(self, timeout: float = 30.0) -> None:
        """Lets go of the pool: once the workers are gone too, the watcher stops PgBouncer;
        waits for that (``timeout`` seconds at most), so that the database's connections
        are free again when this returns."""
        try:
            os.close(self.keep_fd)
        except OSError:
            pass  # closed before
        try:
            self.watcher.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _log.warning("the connection pool (PgBouncer) has not stopped after %g s; "
                         "it stops when the last worker ends", timeout)


def _quote(value: str) -> str:
    """A value of a PgBouncer connection string, quoted."""
    return "'" + value.replace("'", "''") + "'"


def pool_config(url: str, size: int, folder: Path, port: int = PGBOUNCER_PORT,
                outage_timeout: float = 600.0) -> tuple[str, str]:
    """PgBouncer's configuration (``pgbouncer.ini``) and auth file for a private pool of
    ``size`` server connections to the database at ``url``, listening only on a Unix socket
    in ``folder``.

    The client side trusts whoever reaches the socket (the folder is 0700); the password of
    ``url`` stands only in the ``[databases]`` entry PgBouncer logs in with. The auth file
    names the user with no password (PgBouncer's ``trust`` still looks the user up there).

    That entry is PgBouncer's fallback ``*`` (with the ``dbname`` of ``url``), not the
    database's own name: PgBouncer's configuration parser (1.18) takes only ASCII letters,
    digits, ``_``, ``-`` and ``.`` in a key and no quoting, so a database named ``my db`` or
    ``Ünï`` would stop PgBouncer from starting. Only this run's workers reach the socket, all
    asking for that one database.
    """
    import sqlalchemy.engine

    parsed = sqlalchemy.engine.make_url(url)
    env = os.environ
    # what libpq would take where the URL says nothing (the workers' own libpq does so too)
    host = (parsed.host or str(parsed.query.get("host") or "") or env.get("PGHOST")
            or "/var/run/postgresql")
    query = {key: str(value) for key, value in parsed.query.items() if isinstance(value, str)}
    user = parsed.username or query.get("user") or env.get("PGUSER") or _login()
    entry = {"host": host,
             "port": str(parsed.port or parsed.query.get("port") or env.get("PGPORT") or 5432),
             "dbname": parsed.database or query.get("dbname") or env.get("PGDATABASE") or user,
             "user": user}
    # a password in PGPASSWORD or ~/.pgpass (PGPASSFILE), as libpq finds it: PgBouncer reads
    # neither, and every worker failed 'authentication failed' behind it
    password = (parsed.password or query.get("password") or env.get("PGPASSWORD")
                or _pgpass(entry["host"], entry["port"], entry["dbname"], user))
    if password:
        entry["password"] = str(password)
    connstr = " ".join(f"{key}={_quote(value)}" for key, value in entry.items())
    # TLS to PostgreSQL as the URL asks for it (libpq's default: prefer); PgBouncer's own
    # default (disable) sent the study, and a password the server asks for in clear text,
    # unencrypted where the URL said sslmode=require
    tls = {"server_tls_sslmode": str(parsed.query.get("sslmode") or env.get("PGSSLMODE")
                                     or "prefer")}
    for param, setting in (("sslrootcert", "server_tls_ca_file"),
                           ("sslcert", "server_tls_cert_file"),
                           ("sslkey", "server_tls_key_file")):
        value = parsed.query.get(param) or env.get("PG" + param.upper())
        if value:
            tls[setting] = str(Path(str(value)).expanduser().absolute())
    settings = {
        "listen_addr": "",  # no TCP: the Unix socket only
        "listen_port": str(port),
        "unix_socket_dir": str(folder),
        "unix_socket_mode": "0700",
        "auth_type": "trust",
        "auth_file": str(folder / "users.txt"),
        "pool_mode": "transaction",
        "default_pool_size": str(size),
        "min_pool_size": "0",
        "reserve_pool_size": "0",
        "max_db_connections": str(size),
        "max_client_conn": "10000",
        # a client waits for a free server connection while hpo's own outage handling
        # would wait for the database: PgBouncer answers no sooner than that
        "query_wait_timeout": str(max(120, int(outage_timeout) + 60)),
        "server_login_retry": "1",  # a database back from an outage is used at once
        "server_connect_timeout": "10",
        "server_idle_timeout": "60",
        "server_reset_query": "",  # transaction pooling: nothing to reset
        **tls,
        "ignore_startup_parameters": "extra_float_digits,options",
        "log_connections": "0",
        "log_disconnections": "0",
        "log_pooler_errors": "1",
        "stats_period": "3600",
        "pidfile": "",
        "logfile": "",
    }
    ini = (f"[databases]\n* = {connstr}\n\n[pgbouncer]\n"
           + "".join(f"{key} = {value}\n" for key, value in settings.items()))
    users = f'"{user.replace(chr(34), chr(34) * 2)}" ""\n'
    return ini, users


def _login() -> str:
    """libpq's default user: this process's login name ('postgres' where it has none, as in
    a container run with a user id that /etc/passwd does not know)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "postgres"


def _pgpass(host: str, port: str, dbname: str, user: str) -> str | None:
    """The password libpq would take from the password file (``PGPASSFILE``, else
    ``~/.pgpass``; ignored unless only its owner may read it) for this connection."""
    path = Path(os.environ.get("PGPASSFILE") or Path.home() / ".pgpass")
    try:
        if path.stat().st_mode & 0o077:
            return None
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return None
    wanted = ["localhost" if host.startswith("/") else host, port, dbname, user]
    for line in lines:
        if not line.strip() or line.startswith("#"):
            continue
        fields: list[str] = []
        field, escaped = "", False
        for char in line:
            if escaped:
                field, escaped = field + char, False
            elif char == "\\":
                escaped = True
            elif char == ":" and len(fields) < 4:
                fields, field = fields + [field], ""
            else:
                field += char
        if len(fields) == 4 and all(f in ("*", w) for f, w in zip(fields, wanted)):
            return field
    return None


def pooled_url(url: str, folder: Path, port: int = PGBOUNCER_PORT) -> str:
    """The storage URL of the pool in ``folder``: the same user and database, through
    PgBouncer's socket, with no password."""
    import sqlalchemy.engine

    parsed = sqlalchemy.engine.make_url(url)
    query = {k: v for k, v in parsed.query.items()
             if k not in ("host", "port", "sslmode", "password")}
    query.update(host=str(folder), port=str(port))
    return sqlalchemy.engine.URL.create(
        parsed.drivername, username=parsed.username, database=parsed.database,
        query=query).render_as_string(hide_password=False)


def start_pool(url: str, size: int, *, outage_timeout: float = 600.0
               ) -> SharedConnections | None:
    """Starts the private pool of a supervised run (the watcher and its PgBouncer) and
    returns it, ready; None when there is none to start: ``size`` 0, a database other than
    PostgreSQL, a URL with ``options`` (PgBouncer would drop them) or several hosts (one
    line says so), no
    ``pgbouncer`` program (one line says so), or a PgBouncer that did not start (one line
    says why); the workers then connect directly."""
    if size == 0 or not url.startswith("postgresql"):
        return None
    unpoolable = _unpoolable(url)
    if unpoolable:
        _log.warning("connecting each worker directly to the database: %s; pass --pool-size 0 "
                     "to silence this line", unpoolable)
        return None
    program = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/sbin")
    if program is None:
        _log.info("connecting each worker directly to the database: the 'pgbouncer' program "
                  "is not installed; %s", _HOW_TO_GET)
        return None
    read_fd, keep_fd = os.pipe()
    spec = {"url": url, "size": size, "program": program, "fd": read_fd,
            "outage_timeout": outage_timeout}
    watcher = subprocess.Popen([sys.executable, "-c", _WATCHER],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               pass_fds=(read_fd,), start_new_session=True)
    os.close(read_fd)
    assert watcher.stdin is not None and watcher.stdout is not None
    try:
        watcher.stdin.write(json.dumps(spec).encode())
        watcher.stdin.close()
    except OSError:
        pass  # it died: said below
    answer = _read_line(watcher.stdout, _START_TIMEOUT_S + 10)
    if answer.startswith("ready "):
        folder = Path(answer[len("ready "):])
        return SharedConnections(url=pooled_url(url, folder), keep_fd=keep_fd,
                                 watcher=watcher, size=size, folder=folder)
    os.close(keep_fd)
    try:
        watcher.wait(timeout=_STOP_TIMEOUT_S * 2)
    except subprocess.TimeoutExpired:
        watcher.kill()
        watcher.wait()
    reason = answer[len("failed "):] if answer.startswith("failed ") else \
        "it did not answer"
    _log.warning("connecting each worker directly to the database: the connection pool "
                 "(PgBouncer) did not start (%s)", mask_url(reason))
    return None


def _unpoolable(url: str) -> str | None:
    """Why the connection pool cannot stand in for ``url``'s connections, if it cannot."""
    import sqlalchemy.engine

    parsed = sqlalchemy.engine.make_url(url)
    if "options" in parsed.query:
        # PgBouncer drops a client's startup options (ignore_startup_parameters): the workers
        # would run without them, e.g. in another schema than -c search_path=... names
        return ("the 'options' of the storage URL would not reach PostgreSQL through the "
                "connection pool (PgBouncer)")
    hosts = parsed.query.get("host")
    if (isinstance(hosts, tuple) and len(hosts) > 1) or "," in str(parsed.host or hosts or ""):
        # libpq tries them in turn (target_session_attrs); PgBouncer was handed them as
        # one host name and its workers waited for a server that never answered
        return ("the storage URL names several hosts, which the connection pool (PgBouncer) "
                "would not try as libpq does")
    return None


def _read_line(stream: Any, timeout: float) -> str:
    """One line from ``stream`` (a pipe) within ``timeout`` seconds, else ''."""
    deadline = time.monotonic() + timeout
    data = b""
    fd = stream.fileno()
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\n", 1)[0].decode(errors="replace").strip()


# -- the watcher process ---------------------------------------------------------------------


class _Stop(Exception):
    """A signal asked the watcher to stop (it stops PgBouncer first)."""


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise _Stop(signum)


def _as_unprivileged() -> dict[str, Any]:
    """Popen's arguments that run PgBouncer as :data:`_UNPRIVILEGED` when this is root."""
    if os.geteuid() != 0:
        return {}
    import pwd

    entry = pwd.getpwnam(_UNPRIVILEGED)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def _die_with_watcher() -> None:
    """In PgBouncer's process, before it runs (after the change of user, which clears the
    setting): SIGTERM when the watcher dies."""
    set_parent_death_signal(signal.SIGTERM)


def _start_pgbouncer(spec: dict[str, Any], folder: Path) -> subprocess.Popen[bytes]:
    """Writes the configuration (0600, only for PgBouncer's user), starts PgBouncer, waits
    for its socket, then deletes the configuration (the password goes with it)."""
    ini, users = pool_config(spec["url"], int(spec["size"]), folder,
                             outage_timeout=float(spec["outage_timeout"]))
    run_as = _as_unprivileged()
    written = []
    for name, text in (("pgbouncer.ini", ini), ("users.txt", users)):
        path = folder / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        written.append(path)
    if run_as:
        for path in (folder, *written):
            os.chown(path, run_as["user"], run_as["group"])
    log = open(folder / "pgbouncer.log", "wb")  # noqa: SIM115 (PgBouncer's own output)
    try:
        proc = subprocess.Popen([spec["program"], str(folder / "pgbouncer.ini")],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                preexec_fn=_die_with_watcher, **run_as)
    finally:
        log.close()
    socket_path = folder / f".s.PGSQL.{PGBOUNCER_PORT}"
    deadline = time.monotonic() + _START_TIMEOUT_S
    try:
        while not socket_path.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(_last_words(folder))
            time.sleep(0.05)
    finally:
        for path in written:
            path.unlink(missing_ok=True)
    return proc


def _last_words(folder: Path) -> str:
    """The last line PgBouncer wrote, for the one line that says it did not start."""
    try:
        lines = (folder / "pgbouncer.log").read_text(errors="replace").strip().splitlines()
    except OSError:
        lines = []
    return lines[-1][-300:] if lines else "no output"


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_for_eof(fd: int, pgbouncer: subprocess.Popen[bytes]) -> None:
    """Until every holder of the pipe's write end is gone (or PgBouncer died)."""
    while pgbouncer.poll() is None:
        if select.select([fd], [], [], 1.0)[0] and not os.read(fd, 4096):
            return


#: The longest path of a Unix socket (``sun_path``, less its final NUL).
_SOCKET_PATH_MAX = 107


def _pool_parent() -> str | None:
    """Where the pool's folder goes: the temporary folder (None), unless PgBouncer could not
    listen there, then ``/tmp``: run as root, PgBouncer (``nobody``) could not reach a private
    TMPDIR (0700), and a socket's path has at most 107 bytes. Each made PgBouncer fail to
    start ('cannot load config file'), and the workers connected directly."""
    parent = Path(tempfile.gettempdir()).resolve()
    socket = parent / "hpo-pool-xxxxxxxx" / f".s.PGSQL.{PGBOUNCER_PORT}"
    if len(os.fsencode(socket)) > _SOCKET_PATH_MAX:
        return "/tmp"
    if os.geteuid() == 0:
        try:
            if any(not folder.stat().st_mode & stat.S_IXOTH
                   for folder in (parent, *parent.parents)):
                return "/tmp"
        except OSError:
            return "/tmp"
    return None


def watcher_main() -> int:
    """The watcher process: reads its spec (JSON) from stdin, starts PgBouncer, says
    ``ready FOLDER`` (or ``failed REASON``) on stdout, and stops PgBouncer once the pipe it
    was given closes."""
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, _on_signal)
    spec = json.loads(sys.stdin.read())
    fd = int(spec["fd"])
    folder = Path(tempfile.mkdtemp(prefix="hpo-pool-", dir=_pool_parent()))  # 0700
    proc: subprocess.Popen[bytes] | None = None
    try:
        try:
            proc = _start_pgbouncer(spec, folder)
        except (RuntimeError, OSError, KeyError) as exc:
            _say(f"failed {exc}")
            return 1
        _say(f"ready {folder}")
        _wait_for_eof(fd, proc)
        return 0
    except _Stop:
        return 0
    finally:
        if proc is not None:
            _stop(proc)
        shutil.rmtree(folder, ignore_errors=True)


def _say(line: str) -> None:
    try:
        sys.stdout.write(line.replace("\n", " ") + "\n")
        sys.stdout.flush()
        sys.stdout.close()
    except OSError:
        pass  # the supervisor is gone: nothing to tell

