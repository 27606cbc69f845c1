"""Output that cannot be written never fails a run.

``hpo run | head``, quitting ``less``, a terminal that hung up, standard output redirected to
a full disk: a write then raises (``BrokenPipeError``, ``EIO``, ``ENOSPC``). Raised from a
progress line, it would fail the trial in flight and end the run. Here a stream that cannot
be written is dropped instead: its file descriptor is pointed at ``/dev/null`` (so that
later writes, the backends' own and the interpreter's last flush at exit included, succeed
and the exit status stays the run's), standard error says so once where it still can, and
the run goes on.
"""

from __future__ import annotations

import logging
import os
import sys
import weakref
from typing import TextIO

__all__ = ["write_or_drop", "drop_stream", "flush_or_drop"]

_log = logging.getLogger(__name__)
#: Streams given up on that have no file descriptor to point elsewhere. Weak: a stream
#: given up on and then collected must not make a later stream at the same address (its
#: ``id``) silent, as an in-process caller's next captured output would be.
_dropped: weakref.WeakSet[TextIO] = weakref.WeakSet()
#: The descriptors pointed at /dev/null.
_nulled: set[int] = set()
#: The errors a write to a stream that cannot take it raises (ValueError: a closed file).
WRITE_ERRORS = (OSError, ValueError)


def _fileno(stream: TextIO) -> int | None:
    try:
        return stream.fileno()
    except (OSError, ValueError, AttributeError):  # io.UnsupportedOperation: a StringIO
        return None


def _name(stream: TextIO) -> str:
    if stream is sys.__stdout__ or stream is sys.stdout:
        return "standard output"
    if stream is sys.__stderr__ or stream is sys.stderr:
        return "standard error"
    return f"the output stream {getattr(stream, 'name', '?')}"


def drop_stream(stream: TextIO, error: BaseException | None = None) -> None:
    """Gives up on ``stream``: nothing more is written to it (its file descriptor, if it has
    one, now points at ``/dev/null``). When ``error`` is given (the first failure), says so
    once on standard error, if that is another stream that still works."""
    fd = _fileno(stream)
    first = fd not in _nulled if fd is not None else stream not in _dropped
    if fd is not None:
        if fd not in _nulled:
            null = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(null, fd)
            finally:
                os.close(null)
            _nulled.add(fd)
    else:
        _dropped.add(stream)
    if first and error is not None and _fileno(sys.stderr) != fd and \
            stream is not sys.stderr:
        reason = f"{type(error).__name__}: {error}".strip()
        _log.warning("%s cannot be written (%s): progress is no longer printed there; the "
                     "run goes on", _name(stream), reason)


def write_or_drop(stream: TextIO, text: str) -> bool:
    """Writes ``text`` to ``stream`` and flushes it; a stream that cannot be written is
    dropped (:func:`drop_stream`) instead of raising. Returns whether it was written."""
    if stream is None:  # a process started with that descriptor closed
        return False
    fd = _fileno(stream)
    if (fd is not None and fd in _nulled) or stream in _dropped:
        return False
    try:
        stream.write(text)
        stream.flush()
    except WRITE_ERRORS as error:
        drop_stream(stream, error)
        return False
    return True


def flush_or_drop(*streams: TextIO) -> None:
    """Flushes ``streams`` (standard output and error by default) before the process ends; one
    that cannot be written is dropped, so that the interpreter's own last flush cannot fail
    and turn the exit status into 120."""
    for stream in streams or (sys.stdout, sys.stderr):
        if stream is None:
            continue
        try:
            stream.flush()
        except WRITE_ERRORS:
            drop_stream(stream)
