"""A loopback TCP proxy in front of the test database that can cut it off for a while.

``cut()`` drops every connection going through it and refuses new ones, as a database
server that is restarting or a host that lost its network does; ``restore()`` listens again
on the same port. Workers pointed at the proxy see the database unreachable while the real
server, which other tests share, is never touched.
"""

from __future__ import annotations

import socket
import threading

__all__ = ["CuttableProxy"]


class CuttableProxy:
    """Forwards ``127.0.0.1:<port>`` to ``target`` until :meth:`close`.

    Args:
        target_host: Where the database listens.
        target_port: Its port.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._closed = threading.Event()
        self.port = 0
        self.connections = 0  # connections forwarded so far
        self.restore()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    def restore(self) -> None:
        """Listens (again) on the same port."""
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(0.1)
        self.port = listener.getsockname()[1]
        with self._lock:
            self._listener = listener

    def cut(self) -> int:
        """Stops listening and drops every open connection; returns how many were dropped."""
        with self._lock:
            listener, self._listener = self._listener, None
            dropped = list(self._sockets)
            self._sockets.clear()
        if listener is not None:
            listener.close()
        for sock in dropped:
            _close(sock)
        return len(dropped) // 2

    def close(self) -> None:
        self._closed.set()
        self.cut()
        self._thread.join(timeout=5)

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            with self._lock:
                listener = self._listener
            if listener is None:
                self._closed.wait(0.05)
                continue
            try:
                client, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            try:
                upstream = socket.create_connection(self._target, timeout=5)
            except OSError:
                _close(client)
                continue
            upstream.settimeout(None)
            client.settimeout(None)
            with self._lock:
                if self._listener is None:  # cut while connecting
                    _close(client)
                    _close(upstream)
                    continue
                self._sockets.update((client, upstream))
                self.connections += 1
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._sockets.discard(source)
                self._sockets.discard(sink)
            _close(source)
            _close(sink)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
