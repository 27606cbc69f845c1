"""A study's identity: everything that changes what a trial's number means.

Two trials are comparable only if they were scored the same way: on the same images, split
the same way into train / validation / test, shaped the same way (channels, image size), by
the same metric and objectives. ``hpo`` records these at a study's creation in the study user
attribute ``hpo:identity`` and compares them key by key on every resume, before anything is
stored; a difference is a :class:`hpo.errors.StudyError` (exit 2) naming the key, the stored
and the new value, and ``$study_name`` to start another study.

Decisions:

* The study file's ``seed`` draws the split of a folder that is not pre-split (and of a bundled
  set), so it is part of the identity there (``data.split``, with the fractions); the
  command-line ``--seed`` drives the sampler and the weights' initialisation only, never the
  split. A pre-split folder's split is its folders: its seed and fractions are not recorded.
* ``data.images`` is a hash of which image (path relative to the data folder, and its decoded
  pixels' content hash) is in which split with which label: ``--data`` may point at a copy
  of the folder elsewhere (another host), but not at other images, even under the same file
  names. The folder's path itself is not compared.
* ``result_epoch`` (the final or the best epoch's numbers) and ``repeats`` (one run's value
  or a mean) are part of it too, so that a search linked to a grid never takes the grid's
  trials as history when their values mean something else.
* ``image_size`` is compared for the architectures both the stored study and the file use;
  an architecture the file adds is recorded (its trials are new, nothing earlier changes
  meaning). The space hash (``hpo:space_hash:*``) still covers the rest of the file.
* A study created by an earlier ``hpo`` (``hpo:`` attributes but no identity) is adopted:
  its identity is recorded at its first resume, with one log line, and checked from then on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from hpo.config import StudyConfig
from hpo.errors import StudyError

if TYPE_CHECKING:
    from hpo.data import Dataset

__all__ = ["study_identity", "identity_mismatch", "check_identity", "merge_identity"]

#: Layouts whose split the study file's seed and fractions draw.
_DRAWN = ("bundled", "class-folders")

_WHY = {
    "seed": "the study file's seed draws the train/validation/test split (--seed changes the "
            "sampler and the weights' initialisation only, never the split)",
    "data.split": "the train/validation/test fractions draw another split",
    "data.images": "the images, their labels or their split differ",
    "data.classes": "the data's classes differ",
    "data.channels": "RGB and grayscale models would be ranked together",
    "image_size": "models would see images of another size",
    "metric": "a trial's value would be another metric",
    "objectives": "a trial's values would be other objectives",
    "directions": "the objectives would be optimised the other way",
    "result_epoch": "a trial's numbers would come from another epoch (final or best)",
    "repeats": "a trial's value would be a mean over another number of runs",
}


def study_identity(config: StudyConfig, dataset: "Dataset | None" = None) -> dict[str, Any]:
    """The identity of ``config`` (with ``dataset``, the data it loaded: its classes, images
    and split; without it, the study file's keys only)."""
    identity: dict[str, Any] = {
        "data.channels": int(config.data.channels),
        "image_size": {name: [int(a.image_size[0]), int(a.image_size[1])]
                       for name, a in sorted(config.architectures.items())},
        "metric": config.metric,
        "objectives": list(config.objective_names),
        "directions": list(config.directions),
        "result_epoch": config.result_epoch,
        "repeats": int(config.repeats),
    }
    if dataset is not None:
        identity["data.classes"] = list(dataset.classes)
        if dataset.layout in _DRAWN:
            identity["seed"] = int(config.seed)
            identity["data.split"] = [float(f) for f in config.data.split]
        if dataset.split_hash:
            identity["data.images"] = dataset.split_hash
    return identity


def identity_mismatch(stored: Mapping[str, Any], identity: Mapping[str, Any]
                      ) -> tuple[str, Any, Any] | None:
    """The first key (in ``identity``'s order) whose value differs: (key, stored, new)."""
    for key, value in identity.items():
        if key not in stored:
            continue  # recorded by an earlier hpo without it: merge_identity adds it
        old = stored[key]
        if key == "image_size":
            for arch in sorted(set(old) & set(value)):
                if list(old[arch]) != list(value[arch]):
                    return f"image_size.{arch}", old[arch], value[arch]
        elif old != value:
            return key, old, value
    return None


def check_identity(name: str, stored: Mapping[str, Any] | None, identity: Mapping[str, Any],
                   source: str) -> None:
    """Refuses to resume study ``name`` (identity ``stored``, None: not recorded yet) with a
    run whose identity is ``identity``, read from ``source`` (the study file).

    Raises:
        StudyError: A key differs.
    """
    if not stored:
        return
    found = identity_mismatch(stored, identity)
    if found is None:
        return
    key, old, new = found
    why = _WHY.get(key.split(".")[0] if key.startswith("image_size") else key, "")
    fix = ("point $data at the study's data, or use $study_name to start another study on "
           "this data") if key in ("data.classes", "data.images") else \
        f"restore {key}, or use $study_name to start another study"
    raise StudyError(
        f"study {name!r} was created with {key} = {_show(old)}, but {source} (with the "
        f"options given) has {key} = {_show(new)}: {why}, so its trials could not be "
        f"compared with the earlier ones; {fix}")


def merge_identity(stored: Mapping[str, Any] | None, identity: Mapping[str, Any]
                   ) -> dict[str, Any] | None:
    """What to record after :func:`check_identity` passed: ``identity`` for a study without
    one, the keys and architectures ``stored`` lacks added, or None when nothing changes."""
    if not stored:
        return dict(identity)
    merged = dict(stored)
    for key, value in identity.items():
        if key not in merged:
            merged[key] = value
        elif key == "image_size":
            merged[key] = {**value, **merged[key]}
    return None if merged == dict(stored) else merged


def _show(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(map(str, value)) + "]"
    return repr(value) if isinstance(value, str) else str(value)
