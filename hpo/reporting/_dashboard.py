"""optuna-dashboard on a study database: read-only, and behind a token when remote.

optuna-dashboard has no authentication of its own: whoever reaches it can read every study,
and (if writes are allowed) delete one or finish running trials. ``hpo dashboard`` therefore
serves it read-only (every request that is not a GET or HEAD is answered 403) unless
``allow_write``, and, as Jupyter does, guards it with a token when it is bound to an
interface other than loopback (or whenever a token is given): a request must carry the token
as ``Authorization: Bearer TOKEN``, or as ``?token=TOKEN``, which sets an HttpOnly cookie and
redirects to the same page without the token, so that the browser keeps working. Every other
request gets 401. The token is compared in constant time and never logged.
"""

from __future__ import annotations

import hmac
import http.cookies
import ipaddress
import logging
import re
import secrets
import socket
import urllib.parse
from pathlib import Path
from typing import Any, Callable, Iterable
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import optuna

from hpo.errors import ConfigError, InvalidSetting

__all__ = ["read_only", "with_token", "new_token", "is_loopback", "check_host",
           "make_dashboard_server", "TOKEN_COOKIE", "dashboard_token"]

_log = logging.getLogger(__name__)
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
#: The cookie that carries the token once a browser has presented it.
TOKEN_COOKIE = "hpo_dashboard_token"
_TOKEN_IN_TEXT = re.compile(r"(token=)[^&\s]+")


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


def new_token() -> str:
    """A fresh random token (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def is_loopback(host: str) -> bool:
    """Whether ``host`` resolves to a loopback address (only this machine reaches it)."""
    try:
        return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
    except (OSError, ValueError):
        return False


def check_host(host: str, *, token: str | None) -> None:
    """Refuses to serve a non-loopback ``host`` without a token.

    Raises:
        ConfigError: ``host`` is not a loopback address and no token guards it.
    """
    if not is_loopback(host) and not token:
        raise ConfigError(
            f"$host {host} would expose the dashboard beyond this machine without a token; "
            "give one (HPO_DASHBOARD_TOKEN or $token_file) or let hpo generate it")


def dashboard_token(host: str, token_file: Path | None,
                    environ: dict[str, str]) -> tuple[str | None, bool]:
    """The token that guards a dashboard on ``host``, and whether hpo generated it: from
    ``HPO_DASHBOARD_TOKEN``, else ``token_file``, else a new one when ``host`` is not
    loopback; None (no token) on loopback when none is given.

    Raises:
        ConfigError: The token file cannot be read or is empty.
    """
    given = environ.get("HPO_DASHBOARD_TOKEN", "").strip()
    if given:
        return given, False
    if token_file is not None:
        if token_file.is_dir():
            raise ConfigError(f"$token_file {str(token_file)!r} is a folder; expected a file "
                              "holding the token")
        try:
            text = token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"$token_file {str(token_file)!r} cannot be read "
                              f"({exc.strerror}); give a readable file holding the token") \
                from None
        if not text:
            raise ConfigError(f"$token_file {str(token_file)!r} is empty; put the token in "
                              "it (e.g. python -c 'import secrets; print(secrets.token_urlsafe"
                              "(32))')")
        return text, False
    if is_loopback(host):
        return None, False
    return new_token(), True


def _unauthorized(start_response: Callable[..., Any]) -> Iterable[bytes]:
    body = (b'{"reason": "this dashboard needs its token: open the URL hpo dashboard '
            b'printed (?token=...), or send Authorization: Bearer TOKEN"}')
    start_response("401 Unauthorized", [("Content-Type", "application/json"),
                                        ("WWW-Authenticate", 'Bearer realm="hpo dashboard"'),
                                        ("Content-Length", str(len(body)))])
    return [body]


def with_token(app: WSGIApp, token: str) -> WSGIApp:
    """Wraps a WSGI app so that only requests carrying ``token`` reach it (see the module
    docstring); every other request is answered 401."""
    expected = token.encode()

    def same(candidate: str | None) -> bool:
        return candidate is not None and hmac.compare_digest(candidate.encode(), expected)

    def guarded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        header = environ.get("HTTP_AUTHORIZATION", "")
        if header.lower().startswith("bearer ") and same(header[7:].strip()):
            return app(environ, start_response)
        cookies = http.cookies.SimpleCookie()
        try:
            cookies.load(environ.get("HTTP_COOKIE", ""))
        except http.cookies.CookieError:
            cookies = http.cookies.SimpleCookie()
        if TOKEN_COOKIE in cookies and same(cookies[TOKEN_COOKIE].value):
            return app(environ, start_response)
        query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        if same((query.get("token") or [None])[0]):
            rest = urllib.parse.urlencode({k: v for k, v in query.items() if k != "token"},
                                          doseq=True)
            location = urllib.parse.quote(environ.get("SCRIPT_NAME", "") +
                                          environ.get("PATH_INFO", "/")) + \
                ("?" + rest if rest else "")
            start_response("302 Found", [
                ("Location", location),
                ("Set-Cookie", f"{TOKEN_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/"),
                ("Content-Length", "0"),
            ])
            return [b""]
        return _unauthorized(start_response)

    return guarded


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib name)
        # The request line may carry ?token=...: never into a log.
        _log.debug("%s", _TOKEN_IN_TEXT.sub(r"\1***", format % args))


def make_dashboard_server(storage: optuna.storages.BaseStorage, artifacts: Path | None, *,
                          host: str = "127.0.0.1", port: int = 8080,
                          allow_write: bool = False,
                          token: str | None = None) -> WSGIServer:
    """A ready WSGI server for optuna-dashboard on ``storage`` (call ``serve_forever``);
    with ``token``, only requests carrying it are served.

    Raises:
        ConfigError: Non-loopback host without a token, or the port is taken.
    """
    import optuna_dashboard

    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise InvalidSetting("port", "must be from 1 to 65535, or 0 for any free port", port)
    if artifacts is not None and artifacts.exists() and not artifacts.is_dir():
        raise InvalidSetting("artifacts", "must be the runs' artifacts folder; it is a file",
                             str(artifacts))
    check_host(host, token=token)
    store = None
    if artifacts is not None and artifacts.is_dir():
        store = optuna.artifacts.FileSystemArtifactStore(str(artifacts))
    app = optuna_dashboard.wsgi(storage, artifact_store=store)
    if not allow_write:
        app = read_only(app)
    if token:
        app = with_token(app, token)
    try:
        return make_server(host, port, app, handler_class=_QuietHandler)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror}); choose another "
                          "$port") from None
