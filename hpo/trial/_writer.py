"""Kept models written in the background while the next trial trains.

Saving the thesis's AlexNet (800 MB) took about 4 s on an H100 host and blocked the next
trial. :class:`ModelWriter` hands the save to one background thread; the trial's model is
given back to the model pool only when its save is done, so a pooled model is never
retrained while it is being written. At most one save is pending: a second one waits for
the first (the disk, not memory, sets the pace). :meth:`ModelWriter.close` waits for the
pending save; the run loop calls it on every way out (end, Ctrl-C, SIGTERM), so a save
either finishes or, killed with the process, leaves only a ``.part-*`` file that the next
prune removes (:meth:`hpo.trial.Artifacts.prune_models`) and that nothing lists as kept.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

__all__ = ["ModelWriter"]

_log = logging.getLogger(__name__)


class ModelWriter:
    """One background thread for model saves, at most one pending."""

    def __init__(self) -> None:
        self._executor: ThreadPoolExecutor | None = None
        self._pending: Future[None] | None = None

    def submit(self, job: Callable[[], None]) -> None:
        """Runs ``job`` in the background once the previous one is done."""
        self.wait()
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hpo-save")
        self._pending = self._executor.submit(job)

    def wait(self) -> None:
        """Returns when the pending save, if any, is done (its error raised here)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def close(self) -> None:
        """Waits for the pending save and stops the thread."""
        try:
            self.wait()
        finally:
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None
