"""Signals, handled explicitly whatever disposition this process inherited.

A process started from a script's background job (``cmd &`` in a non-interactive shell,
``nohup``, many CI runners) inherits SIGINT *ignored*, and Python then installs no handler
of its own: Ctrl-C would do nothing. Slurm (preemption, ``--requeue``, the time limit),
Kubernetes and ``docker stop`` send SIGTERM, which by default kills the process at once and
leaves its trial RUNNING until the heartbeat grace expires. So every long-running command
installs both handlers here:

* SIGINT raises :class:`KeyboardInterrupt` (the trial in flight is FAIL "interrupted").
* SIGTERM raises :class:`hpo.errors.Stopped` (the trial in flight is FAIL "stopped
  (SIGTERM)" and its grid point free at once).
* A second signal while the first is being handled ends the process at once, with status
  128 + that signal.
* A signal that arrives while Python runs a garbage-collector callback or a ``__del__``
  (Keras imports JAX whenever it is installed, and JAX registers a callback that runs at
  every collection), or any other place where Python drops an exception and only reports
  it (``sys.unraisablehook``: a weakref callback), is delivered again a moment later: an
  exception raised there would be printed as "Exception ignored in ..." with a traceback
  and lost, and Ctrl-C would not stop the worker.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from types import FrameType
from typing import Any, Callable, Iterator

from hpo.errors import Stopped

__all__ = ["STOP_SIGNALS", "worker_signals", "held_signals", "raise_if_swallowed",
           "forwarding_signals", "serve_until_signal"]

#: The signals a worker stops on.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _exit_now(signum: int) -> None:
    sys.stderr.write(f"hpo: {signal.Signals(signum).name} again: stopping at once\n")
    sys.stderr.flush()
    os._exit(128 + signum)


def _in_finalizer(frame: FrameType | None) -> bool:
    """Whether ``frame`` runs inside a garbage-collector callback or a ``__del__`` method,
    where Python swallows any exception raised."""
    import gc

    callbacks = {getattr(callback, "__code__", None) for callback in gc.callbacks}
    for _ in range(64):  # the handler's frame, then its callers
        if frame is None:
            return False
        if frame.f_code in callbacks or frame.f_code.co_name == "__del__":
            return True
        frame = frame.f_back
    return False


def _deliver_later(signum: int, delay: float = 0.01) -> None:
    """Sends ``signum`` to this process again after ``delay`` seconds, from a thread: its
    handler then runs in the main thread, past the finalizer it interrupted."""
    import threading

    timer = threading.Timer(delay, os.kill, (os.getpid(), signum))
    timer.daemon = True
    timer.start()


@contextlib.contextmanager
def _installed(handler: Callable[[int, FrameType | None], None]) -> Iterator[None]:
    previous = {signum: signal.signal(signum, handler) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


@contextlib.contextmanager
def worker_signals() -> Iterator[None]:
    """SIGINT -> KeyboardInterrupt, SIGTERM -> Stopped, once; a second signal exits at once.

    Only the main thread can install handlers; elsewhere (a notebook's worker thread) this
    changes nothing.
    """
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    raised: list[tuple[BaseException, int]] = []  # the handler's exception, and its signal

    def handler(signum: int, frame: FrameType | None) -> None:
        if received:
            _exit_now(signum)
        if _in_finalizer(frame):  # raising here would be printed and lost
            _deliver_later(signum)
            return
        received.append(signum)
        stop: BaseException = KeyboardInterrupt() if signum == signal.SIGINT else Stopped(signum)
        raised[:] = [(stop, signum)]
        raise stop

    def swallowed() -> BaseException | None:
        """The stop the handler raised, when asked where it cannot still be on its way."""
        return raised[0][0] if received and raised else None

    handler.swallowed = swallowed  # type: ignore[attr-defined]  # for raise_if_swallowed

    previous_hook = sys.unraisablehook

    def unraisable(info: Any) -> None:
        """The handler's exception raised where Python drops exceptions and only reports
        them (a weakref callback: seen when Ctrl-C landed in WeakKeyDictionary's, and the
        worker then ran its grid to the end): delivered again a moment later, past it."""
        if raised and info.exc_value is raised[0][0]:
            signum = raised[0][1]
            raised.clear()
            received.clear()
            _deliver_later(signum)
            return
        previous_hook(info)

    sys.unraisablehook = unraisable
    try:
        with _installed(handler):
            yield
    finally:
        if sys.unraisablehook is unraisable:
            sys.unraisablehook = previous_hook


def raise_if_swallowed() -> None:
    """Raises the stop that :func:`worker_signals`' handler raised and some library code
    swallowed without a trace (seen: TensorFlow tracing a train step when Ctrl-C arrived;
    the worker then ran its grid to the end). Called where that stop, had it propagated,
    could no longer be: before a worker starts its next trial."""
    check = getattr(signal.getsignal(signal.SIGINT), "swallowed", None)
    stop = check() if check is not None else None
    if stop is not None:
        raise stop


@contextlib.contextmanager
def held_signals() -> Iterator[Callable[[], None]]:
    """Holds SIGINT/SIGTERM back over a window where raising would strand state: from the
    moment a trial is created (``study.ask``) until the code that tells its end is in
    place. Yields ``release``: it puts the previous handlers back and delivers a signal that
    arrived meanwhile, so that it raises *there* (inside the trial's ``try``); leaving the
    block releases too. A second signal while held ends the process at once, as in
    :func:`worker_signals`. Outside the main thread nothing is held.
    """
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return
    pending: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        if pending:
            _exit_now(signum)
        pending.append(signum)

    previous = {signum: signal.signal(signum, hold) for signum in STOP_SIGNALS}
    released = False

    def release() -> None:
        nonlocal released
        if released:
            return
        released = True
        for signum, old in previous.items():
            signal.signal(signum, old)
        if pending:
            signal.raise_signal(pending[0])  # its handler runs now, in this frame

    try:
        yield release
    finally:
        release()


@contextlib.contextmanager
def forwarding_signals(forward: Callable[[int], None],
                       kill: Callable[[], None]) -> Iterator[list[int]]:
    """For a supervisor: the first SIGINT/SIGTERM is passed on with ``forward(signum)`` (the
    children stop as a worker does); a second one calls ``kill()`` (SIGKILL to the children).
    Yields the list of signals received, so the caller can exit with the right status."""
    received: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        if len(received) == 1:
            forward(signum)
        else:
            sys.stderr.write(f"hpo: {signal.Signals(signum).name} again: stopping the "
                             "workers at once\n")
            kill()

    with _installed(handler):
        yield received


def serve_until_signal(server: Any) -> int:
    """Serves ``server`` (a ``socketserver`` server) until SIGINT or SIGTERM, closes it, and
    returns the exit status: 0 after Ctrl-C (a dashboard's normal end), 143 after SIGTERM.

    The server runs in a thread and the signal only sets an event: raising from the handler
    would land inside whatever request is being served, where the WSGI handler catches it.
    """
    import threading

    stop = threading.Event()
    received: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        if received:
            _exit_now(signum)
        received.append(signum)
        stop.set()

    serving = threading.Thread(target=server.serve_forever, name="hpo-server", daemon=True)
    with _installed(handler):
        serving.start()
        while serving.is_alive() and not stop.wait(0.5):
            pass
        server.shutdown()
        serving.join(timeout=10)
    server.server_close()
    if not received or received[0] == signal.SIGINT:
        return 0
    return 128 + received[0]
