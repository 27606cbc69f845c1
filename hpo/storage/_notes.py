"""Each finished trial's note, stored where optuna-dashboard keeps notes.

optuna-dashboard shows a Markdown note on every trial's page. It stores a trial's note as
*study* system attributes (``dashboard:<trial id>:note_ver``, the version a dashboard edit
must increment, and ``dashboard:<trial id>:note_str:<i>``, the text in pieces of at most
2045 characters), so that a note stays editable after the trial has finished; its
``get_note`` and HTTP API read them back. hpo writes one such note per trial when the trial
finishes, COMPLETE, PRUNED or FAIL, whoever ends it (its worker, a signal, a reaper):

* on hpo's RDB storage, in the transaction that ends the trial (no transaction of its own;
  :meth:`hpo.storage.ResilientRDBStorage.set_trial_state_values`);
* on a journal storage, right after the end (:class:`NotedJournalStorage`).

The text comes from the renderer installed with :func:`set_trial_notes` (the study layer's
``hpo.study.trial_note``); the storage knows only where notes go. A note someone wrote in the
dashboard while the trial ran is kept: the records are inserted, never overwritten.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Sequence

import optuna
from optuna.storages.journal import JournalStorage
from optuna.trial import FrozenTrial, TrialState

from hpo.storage._optuna import journal_study_id, unwrap_storage

__all__ = ["TrialNote", "NOTE_LIMIT", "note_records", "render_note", "set_trial_notes",
           "NotedJournalStorage"]

_log = logging.getLogger(__name__)

#: Renders a finished trial's note; the flag: the storage failed it for a stale heartbeat.
TrialNote = Callable[[FrozenTrial, bool], str]
#: The longest text one of optuna-dashboard's note attributes holds
#: (``optuna_dashboard._note.SYSTEM_ATTR_MAX_LENGTH``): hpo's note is one piece.
NOTE_LIMIT = 2045


def _clipped(body: str) -> str:
    if len(body) <= NOTE_LIMIT:
        return body
    cut = body.rfind("\n", 0, NOTE_LIMIT - 2)
    return body[:cut if cut > 0 else NOTE_LIMIT - 2] + "\n…"


def note_records(trial_id: int, body: str) -> dict[str, Any]:
    """The study system attributes of trial ``trial_id``'s note ``body`` (version 1, one
    piece: a longer body is cut at a line end), as optuna-dashboard's ``save_note`` would
    store them."""
    return {f"dashboard:{trial_id}:note_ver": 1,
            f"dashboard:{trial_id}:note_str:0": _clipped(body)}


def render_note(render: TrialNote | None, trial: FrozenTrial,
                stale: bool = False) -> dict[str, Any]:
    """The note records of finished ``trial`` (none without a renderer). A renderer that
    fails costs the note, never the trial's end: it is logged and nothing is written."""
    if render is None:
        return {}
    try:
        body = render(trial, stale)
    except Exception as exc:  # noqa: BLE001 -- the end of the trial matters more
        _log.warning("could not write the dashboard note of trial %d (%s: %s)", trial.number,
                     exc.__class__.__name__, exc)
        return {}
    return note_records(trial._trial_id, body)


def set_trial_notes(storage: optuna.storages.BaseStorage, render: TrialNote | None, *,
                    replace: bool = True) -> bool:
    """Has ``storage`` write a note rendered by ``render`` for every trial that ends
    through it (None: no notes). ``replace=False`` keeps a renderer already installed.
    False when the storage cannot (not one of hpo's)."""
    backend = unwrap_storage(storage)
    if not hasattr(backend, "trial_notes"):
        return False
    if replace or backend.trial_notes is None:
        backend.trial_notes = render
    return True


class NotedJournalStorage(JournalStorage):
    """Optuna's JournalStorage, writing each finished trial's note after its end (a journal
    has no transactions to share: two appended records more)."""

    trial_notes: TrialNote | None = None

    def set_trial_state_values(self, trial_id: int, state: TrialState,
                               values: Sequence[float] | None = None) -> bool:
        done = super().set_trial_state_values(trial_id, state, values)
        if done and state.is_finished():
            self._write_note(trial_id)
        return done

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        created = super().create_new_trial(study_id, template_trial)
        if template_trial is not None and template_trial.state.is_finished():
            self._write_note(created)
        return created

    def _write_note(self, trial_id: int) -> None:
        records = render_note(self.trial_notes, self.get_trial(trial_id))
        if not records:
            return
        study = journal_study_id(self, trial_id)
        stored = self.get_study_system_attrs(study)
        for key, value in records.items():
            if key not in stored:  # a note written in the dashboard meanwhile is kept
                self.set_study_system_attr(study, key, value)
