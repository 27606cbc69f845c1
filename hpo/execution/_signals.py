"""Signals, handled explicitly whatever disposition this process inherited.

A process started from a script's background job (``cmd &`` in a non-interactive shell,
``nohup``, many CI runners) inherits SIGINT *ignored*, and Python then installs no handler
of its own: Ctrl-C would do nothing. Slurm (preemption, ``--requeue``, the time limit),
Kubernetes and ``docker stop`` send SIGTERM, a closed SSH session or terminal SIGHUP, and
every such signal by default kills the process at once and leaves its trial RUNNING until
the heartbeat grace expires. So every long-running command installs one handler, here, for
every signal whose default action ends the process:

=========================  ===================================  ==========  =============
signal                     sent by                              handled     a second one
=========================  ===================================  ==========  =============
SIGINT                     Ctrl-C, ``kill -INT``                always      ends at once
SIGTERM                    ``kill``, Slurm, Kubernetes,         always      ends at once
                           ``docker stop``, a dead supervisor
SIGQUIT                    Ctrl-\\                              [1]         ends at once
SIGHUP                     a closed SSH session or terminal     [1]         ignored [2]
SIGUSR1, SIGUSR2           Slurm's ``--signal``, scripts        [1]         ignored
SIGALRM, SIGVTALRM,        interval timers, ``timeout -s``      [1]         ignored
SIGPROF
SIGXCPU                    the CPU-time limit (``ulimit -t``),  [1]         ignored [3]
                           every second past it
SIGIO, SIGPWR, SIGSTKFLT   (Linux) async I/O, a UPS daemon      [1]         ignored
=========================  ===================================  ==========  =============

[1] When its default action is in place: a signal the process inherited *ignored*
(``nohup`` ignores SIGHUP, a background job SIGQUIT) or that already has a handler (a
profiler's SIGPROF, a caller's own) is left as it is.
[2] A hang-up often arrives twice (from the shell, then from the kernel as the shell exits):
one event, not a person insisting.
[3] The kernel repeats it every second until the hard limit's SIGKILL.

* SIGINT raises :class:`KeyboardInterrupt` (the trial in flight is FAIL "interrupted").
* Every other one raises :class:`hpo.errors.Stopped` (the trial in flight is FAIL
  "stopped (SIGHUP)" and its grid point free at once); the exit status is 128 + N.
* Left alone on purpose: SIGPIPE and SIGXFSZ, which Python ignores so that a write to a
  closed pipe or past the file-size limit raises an error instead (output hpo cannot write
  is dropped where it is written: :mod:`hpo.reporting`); SIGKILL and SIGSTOP (no process can
  catch them); SIGABRT, SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGSYS, SIGTRAP (a fault of this
  process itself, where no Python handler can run safely); the real-time signals (threading
  libraries and profilers use them; nothing sends them to stop a process). SIGTSTP, SIGTTIN
  and SIGTTOU suspend a process rather than end it; SIGCHLD, SIGCONT, SIGURG and SIGWINCH are
  ignored by default.
* A second SIGINT, SIGTERM or SIGQUIT while the first stop is being handled ends the process
  at once, with status 128 + that signal; other repeats are ignored.
* A worker process hpo started (a supervisor's, an isolated trial's) stops as on SIGTERM when
  the process that started it dies in any way, ``kill -9`` included (:func:`watch_parent`):
  its trial is FAIL "stopped (its supervisor, process N, died)".
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
           "forwarding_signals", "serve_until_signal", "watch_parent", "PARENT_ENV",
           "set_parent_death_signal"]


def _named(*names: str) -> tuple[int, ...]:
    return tuple(getattr(signal, name) for name in names if hasattr(signal, name))


#: The signals a worker stops on (the table above), those this platform has.
STOP_SIGNALS: tuple[int, ...] = _named(
    "SIGINT", "SIGTERM", "SIGQUIT", "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGALRM", "SIGVTALRM",
    "SIGPROF", "SIGXCPU",
    *(("SIGIO", "SIGPWR", "SIGSTKFLT") if sys.platform.startswith("linux") else ()))
#: Handled whatever the disposition this process inherited.
_ALWAYS = frozenset(_named("SIGINT", "SIGTERM"))
#: A second one of these while the first stop is handled ends the process at once.
_INSIST = frozenset(_named("SIGINT", "SIGTERM", "SIGQUIT"))
#: The environment variable that gives a worker process the pid of the hpo process that
#: started it (:func:`watch_parent`).
PARENT_ENV = "HPO_PARENT_PID"
#: Seconds between two looks at the parent's pid where ``prctl`` is not available.
_PARENT_POLL_S = 0.5
#: The pid :func:`watch_parent` watches, once set.
_parent: list[int] = []
#: The parent's death's SIGTERM, once it arrived while a stop was under way.
_excused: list[int] = []


def _ours(handler: Any) -> bool:
    return bool(getattr(handler, "hpo_stop", False))


def _to_handle() -> list[int]:
    """The signals a handler is installed for now: SIGINT and SIGTERM always, the others
    while their default action (or a handler of hpo's) is in place."""
    return [signum for signum in STOP_SIGNALS
            if signum in _ALWAYS or signal.getsignal(signum) == signal.SIG_DFL
            or _ours(signal.getsignal(signum))]


def _parent_died() -> int | None:
    """The pid of this process's supervisor when it has died (:func:`watch_parent`)."""
    if _parent and os.getppid() != _parent[0]:
        return _parent[0]
    return None


def _stop(signum: int) -> BaseException:
    """What the handler raises for ``signum``."""
    if signum == signal.SIGINT:
        return KeyboardInterrupt()
    died = _parent_died()
    return Stopped(signum, None if died is None else f"its supervisor, process {died}, died")


def _again(signum: int) -> None:
    """A signal while the first stop is handled: a SIGINT, SIGTERM or SIGQUIT ends the
    process at once; a repeat of another (a hang-up the shell and the kernel both sent,
    SIGXCPU every second) and the SIGTERM of the parent's death (already stopping) change
    nothing."""
    if signum == signal.SIGTERM and _parent_died() is not None and not _excused:
        _excused.append(signum)  # the kernel's (or the watch's) one SIGTERM, not a person's
        return
    if signum in _INSIST:
        _exit_now(signum)


def _exit_now(signum: int) -> None:
    with contextlib.suppress(OSError, ValueError):  # a closed pipe, a hung-up terminal
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
    handler.hpo_stop = True  # type: ignore[attr-defined]  # see _to_handle
    previous = {signum: signal.signal(signum, handler) for signum in _to_handle()}
    try:
        yield
    finally:
        for signum, old in previous.items():  # None: one set outside Python
            signal.signal(signum, signal.SIG_DFL if old is None else old)


@contextlib.contextmanager
def worker_signals(*, embedded: bool = False) -> Iterator[None]:
    """SIGINT -> KeyboardInterrupt, SIGTERM, SIGHUP, ... -> Stopped, once; a second SIGINT,
    SIGTERM or SIGQUIT exits at once (see the module's table). The previous handlers are
    back when the block ends.

    ``embedded`` (:func:`hpo.run` in someone's interpreter: a notebook's kernel, a script):
    a second SIGINT raises KeyboardInterrupt again, as Python does, instead of ending the
    process, so that interrupting twice never kills the caller's interpreter and its state.

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
            if embedded and signum == signal.SIGINT:
                raise KeyboardInterrupt
            _again(signum)
            return
        if _in_finalizer(frame):  # raising here would be printed and lost
            _deliver_later(signum)
            return
        received.append(signum)
        stop = _stop(signum)
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
    could no longer be: after every batch and epoch of a trial (the objective's
    :class:`hpo.trial._callbacks.StopCheck`: the trial ends FAIL "stopped" at the next
    batch), and before a worker starts its next trial."""
    check = getattr(signal.getsignal(signal.SIGINT), "swallowed", None)
    stop = check() if check is not None else None
    if stop is not None:
        raise stop


@contextlib.contextmanager
def held_signals() -> Iterator[Callable[[], None]]:
    """Holds the stop signals (those :func:`worker_signals` handles; SIGINT and SIGTERM
    always) back over a window where raising would strand state: from the
    moment a trial is created (``study.ask``) until the code that tells its end is in
    place. Yields ``release``: it puts the previous handlers back and delivers a signal that
    arrived meanwhile, so that it raises *there* (inside the trial's ``try``); leaving the
    block releases too. A second signal while held is handled as in :func:`worker_signals`.
    Outside the main thread nothing is held.
    """
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return
    pending: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        if pending:
            _again(signum)
            return
        pending.append(signum)

    held = [signum for signum in STOP_SIGNALS
            if signum in _ALWAYS or _ours(signal.getsignal(signum))]
    previous = {signum: signal.signal(signum, hold) for signum in held}
    released = False

    def release() -> None:
        nonlocal released
        if released:
            return
        released = True
        for signum, old in previous.items():
            signal.signal(signum, signal.SIG_DFL if old is None else old)
        if pending:
            signal.raise_signal(pending[0])  # its handler runs now, in this frame

    try:
        yield release
    finally:
        release()


@contextlib.contextmanager
def forwarding_signals(forward: Callable[[int], None],
                       kill: Callable[[], None]) -> Iterator[list[int]]:
    """For a supervisor: the first stop signal (SIGINT, SIGTERM, SIGHUP, ...: the module's
    table) is passed on with ``forward(signum)`` (the children stop as a worker does); a
    second SIGINT, SIGTERM or SIGQUIT calls ``kill()`` (SIGKILL to the children), a repeat
    of another is ignored. Yields the list of signals acted on, so the caller can exit with
    the right status."""
    received: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        if received and signum not in _INSIST:
            return
        received.append(signum)
        if len(received) == 1:
            forward(signum)
        else:
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.write(f"hpo: {signal.Signals(signum).name} again: stopping the "
                                 "workers at once\n")
                sys.stderr.flush()
            kill()

    with _installed(handler):
        yield received


def serve_until_signal(server: Any) -> int:
    """Serves ``server`` (a ``socketserver`` server) until a stop signal (the module's
    table), closes it, and returns the exit status: 0 after Ctrl-C (a dashboard's normal
    end), 128 + N after signal N (143 after SIGTERM).

    The server runs in a thread and the signal only sets an event: raising from the handler
    would land inside whatever request is being served, where the WSGI handler catches it.
    """
    import threading

    stop = threading.Event()
    received: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        if received:  # the dashboard is a command of its own: never embedded
            _again(signum)
            return
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


def set_parent_death_signal(signum: int) -> bool:
    """``prctl(PR_SET_PDEATHSIG, signum)`` (Linux): the kernel sends ``signum`` to this
    process when the thread that started it ends (hpo starts its workers, and the pool's
    watcher its PgBouncer, from their main thread). False where that is not available.
    A change of user clears it: call it after one."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(1, signum, 0, 0, 0) == 0)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return False


def _poll_parent(pid: int) -> None:
    import time

    while os.getppid() == pid:
        time.sleep(_PARENT_POLL_S)
    os.kill(os.getpid(), signal.SIGTERM)


def watch_parent(pid: int) -> None:
    """Stops this process (as SIGTERM does: the trial in flight is FAIL "stopped (its
    supervisor, process N, died)", exit 143) when ``pid``, the hpo process that started it,
    dies in any way, ``kill -9`` included: a worker would otherwise go on training on its
    own, out of reach of Ctrl-C. On Linux the kernel signals it (``PR_SET_PDEATHSIG``);
    elsewhere a thread looks at the parent's pid twice a second."""
    _parent[:] = [pid]
    if not set_parent_death_signal(signal.SIGTERM):
        import threading

        threading.Thread(target=_poll_parent, args=(pid,), name="hpo-parent-watch",
                         daemon=True).start()
    if os.getppid() != pid:  # it died before the kernel was told to watch it
        os.kill(os.getpid(), signal.SIGTERM)
