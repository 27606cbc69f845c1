"""A loopback server that speaks just enough of the PostgreSQL protocol to reject a password.

The CI's PostgreSQL trusts local connections and never checks a password, so the wrong-
password path is tested against this: it asks for a cleartext password and answers with the
error a real server sends (SQLSTATE 28P01).
"""

from __future__ import annotations

import socket
import struct
import threading

__all__ = ["PasswordRejectingServer"]

_SSL_REQUEST = 80877103
_GSSENC_REQUEST = 80877104


def _read_exact(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise ConnectionError("client closed")
        data += chunk
    return data


class PasswordRejectingServer:
    """Listens on 127.0.0.1 (a free port) until :meth:`close`; every login fails."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(8)
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        while True:
            length, code = struct.unpack("!ii", _read_exact(conn, 8))
            if code in (_SSL_REQUEST, _GSSENC_REQUEST):
                conn.sendall(b"N")
                continue
            _read_exact(conn, length - 8)  # the rest of the startup message
            break
        conn.sendall(b"R" + struct.pack("!ii", 8, 3))  # AuthenticationCleartextPassword
        kind = _read_exact(conn, 1)
        (length,) = struct.unpack("!i", _read_exact(conn, 4))
        _read_exact(conn, length - 4)
        if kind != b"p":
            return
        fields = (b"SFATAL\0" b"VFATAL\0" b"C28P01\0"
                  b'Mpassword authentication failed for user "postgres"\0\0')
        conn.sendall(b"E" + struct.pack("!i", len(fields) + 4) + fields)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except socket.timeout:
                continue
            with conn:
                try:
                    self._handle(conn)
                except (ConnectionError, socket.timeout, struct.error):
                    pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._sock.close()
