"""Linked studies: a study file's grid and its search, each in an Optuna study of its own.

Optuna keeps one distribution per parameter name in a study. The grid's parameters are
categorical (its values), the space's are ranges, so a search run in the study its grid ran
in failed at its first trial (``CategoricalDistribution does not support dynamic value
space``) and left a FAIL trial behind. Converting the grid's trials in place would rewrite
what the grid stored (and the stock ``GridSampler`` reads its coverage from it), so each
*family* of samplers has a study of its own:

* The study named ``S`` (the study file's name or ``--study-name``) belongs to the family
  that created it (study user attribute ``hpo:family``: ``grid``, or ``search`` for every
  other sampler; for a study of an earlier hpo, the family whose space hash it holds).
* A run of the other family goes to the linked study ``S.search`` (or ``S.grid`` when the
  search came first). Both record the link in ``hpo:links`` (family -> study name), which
  the stock dashboard shows with the study's user attributes; ``optuna.load_study`` loads
  either by its name.
* At every start of a search, the linked grid's finished (COMPLETE or PRUNED) trials that it
  has not taken yet are added to the search study as its history
  (:func:`take_grid_history`), converted to the space's distributions when every value lies
  inside the space and every parameter the space does not search is what the search trains
  with; each carries the trial user attribute ``imported_from`` naming its grid trial. The run
  logs one line with how many it took and how many it left out, and why. An imported trial
  is never trained again and never counted in the run's ``n_trials`` (the loop counts the
  trials it runs). Nothing goes from the search to the grid: a grid point is trained as the
  grid defines it.

Both studies of a pair must have the same identity (:mod:`hpo.study._identity`): the pair is
checked before the linked study is created.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo.config import StudyConfig
from hpo.errors import StudyError
from hpo.search import to_space
from hpo.storage import storage_of
from hpo.study import _attrs as attrs

__all__ = ["GRID", "SEARCH", "family_of", "pick_study_name", "stored_family", "link",
           "linked_studies", "take_grid_history", "GridHistory", "hpo_created",
           "refuse_foreign"]

_log = logging.getLogger(__name__)

GRID = "grid"
SEARCH = "search"
_HASH = {GRID: "hpo:space_hash:grid", SEARCH: "hpo:space_hash:space"}


def family_of(sampler: str) -> str:
    """``grid`` for the grid sampler, ``search`` for every other (canonical names)."""
    return GRID if sampler == GRID else SEARCH


def hpo_created(user_attrs: dict[str, Any]) -> bool:
    """Whether a study's user attributes are hpo's (any ``hpo:`` key)."""
    return any(str(key).startswith("hpo:") for key in user_attrs)


def stored_family(user_attrs: dict[str, Any]) -> str | None:
    """The family a stored study belongs to, or None when it cannot be told (no space hash
    yet, or an earlier hpo's study that holds both: it is used as it is)."""
    family = user_attrs.get(attrs.FAMILY)
    if family in (GRID, SEARCH):
        return str(family)
    held = [f for f, key in _HASH.items() if key in user_attrs]
    return held[0] if len(held) == 1 else None


def _study_attrs(storage: optuna.storages.BaseStorage, name: str
                 ) -> tuple[int, dict[str, Any]] | None:
    try:
        sid = storage.get_study_id_from_name(name)
    except KeyError:
        return None
    return sid, storage.get_study_user_attrs(sid)


def refuse_foreign(storage: optuna.storages.BaseStorage, name: str) -> dict[str, Any] | None:
    """The user attributes of study ``name`` (None when there is none).

    Raises:
        StudyError: The study holds trials but no ``hpo:`` attribute: another program's
            (a stock Optuna study of the same name), whose trials hpo must not mix with its
            own. An empty one is adopted.
    """
    found = _study_attrs(storage, name)
    if found is None:
        return None
    sid, user_attrs = found
    if not hpo_created(user_attrs):
        count = storage.get_n_trials(sid)
        if count:
            raise StudyError(
                f"study {name!r} in this storage was not created by hpo (it has {count} "
                "trial(s) and no hpo: attributes); hpo will not mix its trials with that "
                "study's: use $study_name to start another study")
    return user_attrs


def pick_study_name(storage: optuna.storages.BaseStorage, base: str, family: str) -> str:
    """The study a run of ``family`` uses for the study called ``base``: ``base`` itself,
    unless ``base`` belongs to the other family; then its linked study."""
    user_attrs = refuse_foreign(storage, base)
    if user_attrs is None:
        return base
    owner = stored_family(user_attrs)
    if owner is None or owner == family:
        return base
    return str((user_attrs.get(attrs.LINKS) or {}).get(family) or f"{base}.{family}")


def link(storage: optuna.storages.BaseStorage, study: optuna.Study, family: str,
         base: str) -> None:
    """Records ``study``'s family and, when it is not ``base``, the link both ways.

    An earlier hpo's study that holds both families' space hashes gets no family: it stays
    the one study both run in, as before."""
    held = [f for f, key in _HASH.items() if key in study.user_attrs]
    if attrs.FAMILY not in study.user_attrs and held == [family]:
        study.set_user_attr(attrs.FAMILY, family)
    if study.study_name == base:
        return
    found = _study_attrs(storage, base)
    if found is None:
        return
    sid, base_attrs = found
    owner = stored_family(base_attrs) or (GRID if family == SEARCH else SEARCH)
    if base_attrs.get(attrs.FAMILY) != owner:
        storage.set_study_user_attr(sid, attrs.FAMILY, owner)
    links = dict(base_attrs.get(attrs.LINKS) or {})
    if links.get(family) != study.study_name:
        storage.set_study_user_attr(sid, attrs.LINKS, {**links, family: study.study_name})
    mine = dict(study.user_attrs.get(attrs.LINKS) or {})
    if mine.get(owner) != base:
        study.set_user_attr(attrs.LINKS, {**mine, owner: base})


def linked_studies(study: optuna.Study) -> list[optuna.Study]:
    """The studies ``study`` is linked to (``hpo:links``) that exist in its storage."""
    result = []
    for family, name in sorted((study.user_attrs.get(attrs.LINKS) or {}).items()):
        if name == study.study_name:
            continue
        try:
            result.append(optuna.load_study(study_name=str(name), storage=storage_of(study)))
        except KeyError:
            continue
    return result


@dataclass
class GridHistory:
    """What a search took from its linked grid study.

    Attributes:
        grid: The grid study's name.
        before: Grid trials taken by earlier runs.
        new: Grid trials taken now.
        left_out: Why the others were not taken -> how many.
    """

    grid: str
    before: int = 0
    new: int = 0
    left_out: Counter[str] = field(default_factory=Counter)

    def line(self) -> str:
        """The run's one line about it."""
        text = (f"history from grid study {self.grid!r}: took {self.new} finished trial(s)"
                + (f" ({self.before} taken before)" if self.before else ""))
        if self.left_out:
            why = "; ".join(f"{n}: {reason}" for reason, n in self.left_out.most_common())
            text += f", left out {sum(self.left_out.values())} ({why})"
        else:
            text += ", left out none"
        return text


def take_grid_history(study: optuna.Study, config: StudyConfig) -> GridHistory | None:
    """Adds the linked grid study's finished trials that ``study`` (a search study) has not
    taken yet, as its history; call under the study lock. None when no grid is linked.

    Returns:
        What was taken and left out (:meth:`GridHistory.line` says it in one line).
    """
    name = (study.user_attrs.get(attrs.LINKS) or {}).get(GRID)
    if not name or name == study.study_name or not config.space:
        return None
    try:
        grid = optuna.load_study(study_name=str(name), storage=storage_of(study))
    except KeyError:
        return None
    history = GridHistory(grid=grid.study_name)
    taken = {int(t.user_attrs[attrs.IMPORTED_FROM]["trial"])
             for t in study.get_trials(deepcopy=False)
             if (t.user_attrs.get(attrs.IMPORTED_FROM) or {}).get("study") == grid.study_name}
    trained_with = dict(grid.user_attrs.get(attrs.TRAINING) or config.training)
    new: list[FrozenTrial] = []
    for trial in grid.get_trials(deepcopy=False,
                                 states=(TrialState.COMPLETE, TrialState.PRUNED)):
        if trial.number in taken:
            history.before += 1
            continue
        converted = to_space(config, trial.params, trained_with)
        if isinstance(converted, str):
            history.left_out[converted] += 1
            continue
        if trial.values is not None and len(trial.values) != len(study.directions):
            history.left_out["other objectives"] += 1
            continue
        params, distributions = converted
        new.append(optuna.trial.create_trial(
            state=trial.state,
            values=trial.values if trial.state == TrialState.COMPLETE else None,
            params=params,
            distributions=distributions,
            user_attrs={**{k: v for k, v in trial.user_attrs.items() if k != attrs.WORKER},
                        attrs.IMPORTED_FROM: {"study": grid.study_name,
                                              "trial": trial.number}},
            intermediate_values=dict(trial.intermediate_values),
        ))
    if new:
        study.add_trials(new)
    history.new = len(new)
    return history
