"""Progress of a long decode (the image cache of a 100k-image folder takes minutes).

On a terminal: one line rewritten in place, at most a few times a second, with images/s and
the time left. Anywhere else (a log file, a batch job's output): one plain line per 10 %.
A stream that cannot be written (a closed pipe, a hung-up terminal) is no longer written to:
the decode goes on.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

__all__ = ["DecodeProgress"]


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class DecodeProgress:
    """Counts decoded images from any thread and shows how far along it is.

    Args:
        total: Images to decode.
        label: What is being done (``decoding images``).
        stream: Where to write (standard error by default).
        tty: Whether ``stream`` is a terminal (default: ask it).
        shown: False counts without writing anything (``--quiet``).
    """

    def __init__(self, total: int, label: str = "decoding images",
                 stream: TextIO | None = None, tty: bool | None = None,
                 shown: bool = True) -> None:
        self._shown = shown
        self._total = max(total, 1)
        self._label = label
        self._stream = stream if stream is not None else sys.stderr
        try:
            self._tty = self._stream.isatty() if tty is None else tty
        except ValueError:  # a closed stream
            self._shown, self._tty = False, False
        self._done = 0
        self._started = time.monotonic()
        self._shown_at = 0.0
        self._next_tenth = 1
        self._lock = threading.Lock()

    def advance(self, count: int = 1) -> None:
        """Counts ``count`` more images done."""
        with self._lock:
            self._done += count
            if not self._shown:
                return
            if self._tty:
                now = time.monotonic()
                if now - self._shown_at >= 0.2 or self._done >= self._total:
                    self._shown_at = now
                    self._write("\r" + self.line() + "\x1b[K")
            else:
                while self._next_tenth <= 10 and self._done * 10 >= self._next_tenth * \
                        self._total:
                    self._next_tenth += 1
                    self._write(self.line() + "\n")

    def close(self) -> None:
        """Ends the terminal line."""
        if self._shown and self._tty and self._done:
            self._write("\n")

    def _write(self, text: str) -> None:
        """Writes ``text``; a stream that cannot be written is not written to again."""
        if not self._shown:
            return
        try:
            self._stream.write(text)
            self._stream.flush()
        except (OSError, ValueError):  # a closed pipe, a hung-up terminal, a closed file
            self._shown = False

    def line(self) -> str:
        """``decoding images: 4,500/10,000 (45%), 1,234 images/s, 0:04 left``."""
        elapsed = max(time.monotonic() - self._started, 1e-9)
        rate = self._done / elapsed
        left = (self._total - self._done) / rate if rate > 0 else 0.0
        return (f"{self._label}: {self._done:,}/{self._total:,} "
                f"({100 * self._done // self._total}%), {rate:,.0f} images/s, "
                f"{_clock(left)} left")
