"""A study's images as memory-mapped uint8 arrays, split into train / validation / test."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from hpo.config import DataConfig
from hpo.data._bundled import load_bundled
from hpo.data._cache import build_entry, cache_key, default_cache_dir
from hpo.data._discovery import SPLITS, discover, stratified_split
from hpo.errors import DataError

__all__ = ["Split", "Dataset", "load_dataset"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Split:
    """Images (N, H, W, C) uint8, memory-mapped, and their integer labels (N,)."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class Dataset:
    """The three splits of a study's data.

    Attributes:
        classes: Class names; labels index into them.
        train: Training split.
        validation: Validation split (the metric the search optimises).
        test: Test split, or None when the folder has none.
        cache: The cache folder the arrays are mapped from.
        skipped: Unreadable images that were left out.
        facts: What a user should know before trusting the numbers, as the study records
            it: ``layout``, ``carved`` (split -> fraction of train/ carved out),
            ``duplicates`` (see :func:`hpo.data.find_duplicates`: counts and examples),
            ``wide_images`` (images of more than 8 bits, scaled by the folder's range),
            ``skipped`` (count).
        split_hash: Which images are in which split (paths relative to the folder, and
            labels; a bundled set's name, fractions and seed): the same wherever the folder
            lies, different when an image, a label or the split changes. A study records it.
        layout: ``bundled``, ``class-folders`` (split drawn from the seed and fractions),
            ``pre-split`` or ``thesis`` (split by its folders).
    """

    classes: tuple[str, ...]
    train: Split
    validation: Split
    test: Split | None
    cache: Path
    skipped: tuple[str, ...]
    facts: dict[str, Any] = field(default_factory=dict, compare=False)
    split_hash: str = ""
    layout: str = ""

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(height, width, channels) of every image."""
        height, width, channels = self.train.x.shape[1:]
        return int(height), int(width), int(channels)


def _open(entry: Path) -> Dataset:
    meta = json.loads((entry / "meta.json").read_text())
    splits = {}
    for split in SPLITS:
        if (entry / f"{split}_y.npy").is_file():
            y = np.load(entry / f"{split}_y.npy")
            x = np.load(entry / f"{split}_x.npy", mmap_mode="r")
            splits[split] = Split(x=x, y=y) if len(y) else None
        else:
            splits[split] = None
    if splits["train"] is None or splits["validation"] is None:
        raise DataError(f"the data in {meta.get('source')} leaves no readable image in the "
                        "training or validation split; check the folder's images")
    classes = tuple(meta["classes"])
    present = set(np.unique(splits["train"].y).tolist())
    missing = [name for label, name in enumerate(classes) if label not in present]
    if missing:
        skipped = len(meta.get("skipped", ()))
        raise DataError(
            f"class {missing[0]!r} of {meta.get('source')} has no readable image in the "
            f"training split ({skipped} unreadable file(s) skipped); a model trained without "
            "it would score on the other classes only. Replace its images, or remove its "
            "folder to study the other classes")
    facts: dict[str, Any] = {"layout": meta.get("layout"),
                             "skipped": len(meta.get("skipped", ())),
                             "carved": meta.get("carved") or {},
                             "duplicates": meta.get("duplicates") or {},
                             "wide_images": meta.get("wide") or {},
                             "content": meta.get("content")}
    return Dataset(classes=classes, train=splits["train"],
                   validation=splits["validation"], test=splits["test"], cache=entry,
                   skipped=tuple(meta.get("skipped", ())), facts=facts,
                   layout=str(meta.get("layout", "")))


_reported: set[Path] = set()  # cache entries whose facts this process has said


def _say_facts(dataset: Dataset, source: str, strict: bool) -> None:
    """Logs what a user should know about the data once per process and entry (a reused
    cache too, not only the run that built it); under ``strict``, refuses unreadable images
    and the same picture in two splits or two classes.

    Raises:
        DataError: Under ``strict``: a skipped image, or duplicates across splits/classes.
    """
    facts, skipped = dataset.facts, dataset.skipped
    dup = facts.get("duplicates") or {}
    leaks = dup.get("across_splits", 0), dup.get("across_classes", 0)
    example = " and ".join(dup["examples"][0]) if dup.get("examples") else ""
    if strict and skipped:  # a cache built without $strict, reused with it
        raise DataError(
            f"cannot read image {skipped[0]} ({len(skipped)} unreadable file(s) in {source}); "
            "remove or replace the files, or run without $strict to skip unreadable images")
    if strict and any(leaks):
        raise DataError(
            f"{source} holds the same image in two splits ({leaks[0]} images) or under two "
            f"classes ({leaks[1]} images), e.g. {example}: test and validation scores would "
            "count seen images as unseen, or labels contradict; remove the copies, or run "
            "without $strict to train anyway")
    if dataset.cache in _reported:
        return
    _reported.add(dataset.cache)
    if skipped:
        _log.warning("skipped %d unreadable image(s); first: %s", len(skipped), skipped[0])
    for split, share in (facts.get("carved") or {}).items():
        _log.info("%s carved from train/ of %s: %.1f%% of its images per class, seeded by "
                  "the study's seed (train:%s as data.split says)", split, source,
                  100 * share, split)
    wide = facts.get("wide_images")
    if wide and wide.get("images"):
        _log.info("%d image(s) of more than 8 bits (%s) scaled to 8 bits by the folder's "
                  "range %g..%g", wide["images"],
                  ", ".join(f"{m} {n}" for m, n in wide["modes"].items()), wide["low"],
                  wide["high"])
    if any(leaks):
        _log.warning(
            "the same image in two splits (%d images) or under two classes (%d images) of %s, "
            "e.g. %s: test and validation scores count seen images as unseen; remove the "
            "copies (--strict stops on them)", leaks[0], leaks[1], source, example)
    for name, split in (("validation", dataset.validation), ("test", dataset.test)):
        if split is None or not len(split):
            continue
        absent = [c for i, c in enumerate(dataset.classes) if not np.any(split.y == i)]
        if absent:  # its accuracy, matrix and AUC then cover fewer classes than training
            _log.warning("the %s split of %s has no image of class(es) %s: its scores cover "
                         "the other classes only; add images of them there", name, source,
                         ", ".join(absent))


def load_dataset(data: DataConfig, image_size: tuple[int, int], *, seed: int = 0,
                 cache_dir: Path | None = None, strict: bool = False) -> Dataset:
    """Loads the study's images, decoding them into the cache the first time only.

    Args:
        data: The study's data settings (``source`` may be overridden by ``--data``).
        image_size: (height, width) to resize to.
        seed: Seed of the train/validation/test split of an unsplit folder.
        cache_dir: Cache location; default :func:`hpo.data.default_cache_dir`.
        strict: Fail on an unreadable image, or on the same image in two splits or under
            two classes, instead of warning.

    Raises:
        DataError: Missing or empty folder, one class only, unreadable image or duplicates
            under ``strict``.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    size = (int(image_size[0]), int(image_size[1]))
    if data.bundled is not None:
        name = data.bundled

        def arrays() -> dict[str, tuple[np.ndarray, np.ndarray]]:
            x, y, _ = load_bundled(name, size, data.channels)
            parts = stratified_split(y, data.split, seed)
            return {split: (x[idx], y[idx]) for split, idx in zip(SPLITS, parts)}

        classes = load_bundled_classes(name)
        key = cache_key(["bundled", name, size, data.channels, data.split, seed])
        entry = build_entry(cache_dir, key, splits={}, size=size, channels=data.channels,
                            meta={"classes": classes, "source": data.source,
                                  "layout": "bundled"},
                            strict=strict, arrays=arrays)
        return replace(_open(entry), split_hash=_digest(["bundled", name, data.split, seed]))

    index = discover(data.source, fractions=data.split, seed=seed)
    fingerprint = []
    for split in SPLITS:
        for path, label in index.files[split]:
            try:
                stat = path.stat()
            except OSError as exc:
                raise DataError(f"cannot read {path} ({exc}); check the folder's "
                                "permissions") from None
            fingerprint.append((split, str(path), label, stat.st_size, stat.st_mtime_ns))
    key = cache_key(["folder", str(index.root), fingerprint, size, data.channels])
    entry = cache_dir / key
    if not (entry / "meta.json").is_file():
        total = sum(len(f) for f in index.files.values())
        _log.info("decoding %d images of %s (%s layout) into the cache %s", total,
                  index.root, index.layout, entry)
    entry = build_entry(
        cache_dir, key,
        splits={s: ([p for p, _ in index.files[s]], [label for _, label in index.files[s]])
                for s in SPLITS},
        size=size, channels=data.channels,
        meta={"classes": list(index.classes), "source": str(index.root),
              "layout": index.layout, "carved": index.carved},
        strict=strict,
    )
    opened = _open(entry)
    dataset = replace(opened, split_hash=_digest(
        [[split, path.relative_to(index.root).as_posix(), label]
         for split in SPLITS for path, label in index.files[split]]
        + [opened.facts.get("content")]))  # the pixels too: other images, same names
    _say_facts(dataset, str(index.root), strict)
    return dataset


def _digest(parts: list[object]) -> str:
    """A short, stable hash of ``parts`` (no cache version in it: a study keeps it)."""
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]


def load_bundled_classes(name: str) -> list[str]:
    """Class names of bundled set ``name`` without decoding it."""
    if name == "digits":
        return [str(i) for i in range(10)]
    load_bundled(name, (8, 8), 1)  # raises DataError naming the known sets
    return []
