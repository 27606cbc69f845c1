"""A trial's records: the one way ``trial/`` writes a trial's user attributes to the storage.

The run loop creates a :class:`TrialRecorder` for each trial it takes and hands it to the
objective, which notes what it measures as it goes (:meth:`TrialRecorder.note`). Notes are
written in batches, one transaction each, when the objective or the loop flushes them:
after the trial's set-up (where it runs, seen at once by ``hpo status`` and same-host
reaping), after ``fit`` and the evaluation, and with the trial's end (the loop's last flush
holds the records for the transaction that ends the trial: see
:mod:`hpo.storage._contract`).

If another worker failed the trial while it ran (its heartbeat was late), a flush finds it
finished: those records were not written, and neither were those held for its end. The
recorder keeps both (:meth:`TrialRecorder.leftovers`) for the loop, which keeps them with
the trial's late result.
"""

from __future__ import annotations

from typing import Any

import optuna

from hpo.storage import set_user_attrs, trial_id, withheld_user_attrs

__all__ = ["TrialRecorder"]


class TrialRecorder:
    """Batches ``trial``'s user attributes and writes them to its storage.

    Args:
        trial: The running trial.
    """

    def __init__(self, trial: optuna.Trial) -> None:
        self._trial = trial
        self._notes: dict[str, Any] = {}
        self._orphaned: dict[str, Any] = {}
        self._failed_under_us = False

    def note(self, key: str, value: Any) -> None:
        """Notes a user attribute, written with the others at the next :meth:`flush`."""
        self._notes[key] = value

    def record(self, key: str, value: Any) -> None:
        """Writes a user attribute now (with any noted before it)."""
        self.note(key, value)
        self.flush()

    def flush(self, *, with_end: bool = False) -> None:
        """Writes what was noted, in one transaction; ``with_end``: the trial's last
        records, held for the transaction that ends it (on hpo's storage). Records that
        found the trial finished under its worker are kept for :meth:`leftovers`."""
        notes, self._notes = self._notes, {}
        if not notes:
            return
        try:
            set_user_attrs(self._trial.storage, trial_id(self._trial), notes,
                           with_end=with_end)
        except optuna.exceptions.UpdateFinishedTrialError:
            self._failed_under_us = True
            self._orphaned.update(notes)

    @property
    def failed_under_us(self) -> bool:
        """Whether a flush found the trial finished while it ran (another worker failed it
        as stale): its model is not kept, its records wait in :meth:`leftovers`."""
        return self._failed_under_us

    def leftovers(self) -> dict[str, Any]:
        """The records that never reached the trial (it was failed under its worker), its
        end's held records included; taken once, after the trial's end was told."""
        left = {**self._orphaned,
                **withheld_user_attrs(self._trial.storage, trial_id(self._trial))}
        self._orphaned = {}
        return left
