"""optuna-dashboard on a study database, read-only and on localhost unless told otherwise.

optuna-dashboard has no authentication: whoever reaches it can delete a study or finish
running trials. ``hpo dashboard`` therefore serves it read-only (every request that is not a
GET or HEAD is answered 403) unless ``allow_write``, binds 127.0.0.1, and refuses another
interface unless ``allow_remote`` (put a reverse proxy with authentication in front).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from pathlib import Path
from typing import Any, Callable, Iterable
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import optuna

from hpo.errors import ConfigError

__all__ = ["read_only", "check_host", "make_dashboard_server"]

_log = logging.getLogger("hpo.dashboard")
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def read_only(app: WSGIApp) -> WSGIApp:
    """Wraps a WSGI app so that only GET and HEAD requests reach it."""

    def guarded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD"):
            body = (b'{"reason": "hpo dashboard is read-only; restart it with --allow-write '
                    b'to change studies"}')
            start_response("403 Forbidden", [("Content-Type", "application/json"),
                                             ("Content-Length", str(len(body)))])
            return [body]
        return app(environ, start_response)

    return guarded


def check_host(host: str, *, allow_remote: bool) -> None:
    """Refuses a non-loopback ``host`` unless ``allow_remote``.

    Raises:
        ConfigError: ``host`` is not a loopback address and remote access was not allowed.
    """
    try:
        loopback = ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
    except (OSError, ValueError):
        loopback = False
    if not loopback and not allow_remote:
        raise ConfigError(
            f"$host {host} would expose the dashboard beyond this machine, and it has no "
            "authentication; add $allow_remote (behind a reverse proxy with authentication) "
            "or use $host 127.0.0.1"
        )
    if not loopback:
        _log.warning("the dashboard on %s has no authentication: anyone who reaches it can "
                     "read every study", host)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib name)
        _log.debug(format, *args)


def make_dashboard_server(storage: optuna.storages.BaseStorage, artifacts: Path | None, *,
                          host: str = "127.0.0.1", port: int = 8080,
                          allow_write: bool = False,
                          allow_remote: bool = False) -> WSGIServer:
    """A ready WSGI server for optuna-dashboard on ``storage`` (call ``serve_forever``).

    Raises:
        ConfigError: Non-loopback host without ``allow_remote``, or the port is taken.
    """
    import optuna_dashboard

    check_host(host, allow_remote=allow_remote)
    store = None
    if artifacts is not None and artifacts.is_dir():
        store = optuna.artifacts.FileSystemArtifactStore(str(artifacts))
    app = optuna_dashboard.wsgi(storage, artifact_store=store)
    if not allow_write:
        app = read_only(app)
    try:
        return make_server(host, port, app, handler_class=_QuietHandler)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror}); choose another "
                          "$port") from None
