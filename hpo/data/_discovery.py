"""Find the images of a folder and how it is split.

Three layouts are understood:

* pre-split: at least two of ``train/`` (or ``training/``), ``validation/`` (``val/``,
  ``valid/``) and ``test/`` (``testing/``), any capitalisation, each holding one sub-folder
  per class. A missing ``validation/`` is carved from ``train/`` (stratified, seeded by the
  study's seed, train:validation as the study's ``data.split``) and recorded in
  :attr:`ImageIndex.carved`; a missing ``test/`` leaves the study without a test split (the
  images the user put in ``train/`` all train); no ``train/`` is refused;
* the thesis's: ``Train/<class>/``, ``Validation/<class>/`` and ``Test_<C>/`` where ``<C>``
  names (or starts) a class, e.g. ``Test_T/`` for class ``True`` (``Validation/`` may be
  missing, as above);
* one sub-folder per class, split train/validation/test by the study's fractions,
  stratified and seeded.

A folder named like a split is a split when it holds class sub-folders; one that holds its
images directly is a class (``train/`` among vehicle classes). A split folder next to class
folders, or alone, is refused rather than trained as a class.

Hidden files and folders are ignored at any depth, as file browsers hide them: any name that
starts with ``.`` (``.ipynb_checkpoints/``, ``.DS_Store``, macOS's ``._x.jpg``) and macOS
archives' ``__MACOSX/``. (``Thumbs.db`` and ``desktop.ini`` are not images: never counted.)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hpo.errors import DataError

__all__ = ["IMAGE_EXTENSIONS", "ImageIndex", "discover", "stratified_split", "is_hidden"]

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
_SPLIT_NAMES = {"train": ("train", "training"), "validation": ("validation", "val", "valid"),
                "test": ("test", "testing")}
SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class ImageIndex:
    """The image files of a folder, by split, with integer labels.

    Attributes:
        root: The folder.
        layout: ``"pre-split"``, ``"thesis"`` or ``"class-folders"``.
        classes: Class names; a label is an index into this tuple.
        files: Split name -> list of (path, label).
        carved: Split -> the fraction of ``train/`` carved out as that split, for a
            pre-split folder that lacks it.
    """

    root: Path
    layout: str
    classes: tuple[str, ...]
    files: dict[str, list[tuple[Path, int]]]
    carved: dict[str, float] = field(default_factory=dict)


_HIDDEN_NAMES = frozenset({"__macosx"})


def is_hidden(name: str) -> bool:
    """Whether a file or folder name is one that file browsers hide (or macOS's archive
    folder ``__MACOSX``): never data."""
    return name.startswith(".") or name.lower() in _HIDDEN_NAMES


def _images_in(folder: Path) -> list[Path]:
    """Image files under ``folder`` at any depth, hidden ones and those in hidden folders
    left out; symbolic links to folders are not followed (as ``Path.rglob``)."""
    found = []
    for parent, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not is_hidden(d)]
        found += [Path(parent) / n for n in names
                  if not is_hidden(n) and Path(n).suffix.lower() in IMAGE_EXTENSIONS]
    return sorted(p for p in found if p.is_file())


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not is_hidden(p.name))


def _class_folders(folder: Path) -> dict[str, list[Path]]:
    return {d.name: _images_in(d) for d in _subdirs(folder)}


def stratified_split(labels: np.ndarray, fractions: tuple[float, float, float],
                     seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Splits indices of ``labels`` into train/validation/test, per class, seeded.

    Each class with at least 3 items puts at least one in every split of a fraction above 0
    (a fraction of 0 leaves its split empty).
    """
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[], [], []]
    for label in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == label))
        n = len(idx)
        n_val = max(1, round(n * fractions[1])) if n >= 3 and fractions[1] > 0 else 0
        n_test = max(1, round(n * fractions[2])) if n >= 3 and fractions[2] > 0 else 0
        n_train = n - n_val - n_test
        parts[0] += idx[:n_train].tolist()
        parts[1] += idx[n_train:n_train + n_val].tolist()
        parts[2] += idx[n_train + n_val:].tolist()
    train, validation, test = (np.sort(np.asarray(p, dtype=np.int64)) for p in parts)
    return train, validation, test


def _check_classes(root: Path, classes: dict[str, list[Path]], where: str) -> None:
    with_images = [c for c, files in classes.items() if files]
    if len(with_images) < 2:
        found = ", ".join(f"{c} ({len(f)} images)" for c, f in classes.items()) or "none"
        raise DataError(
            f"{where} of {root} needs at least 2 class folders with images; found {found}. "
            "Put each class's images in its own sub-folder"
        )


def _match_test_class(name: str, classes: tuple[str, ...], root: Path) -> int:
    key = name[len("test_"):].lower()
    exact = [i for i, c in enumerate(classes) if c.lower() == key]
    prefix = [i for i, c in enumerate(classes) if c.lower().startswith(key)]
    matches = exact or prefix
    if len(matches) != 1:
        raise DataError(
            f"{root / name}: cannot tell which class it holds; expected Test_<class> naming "
            f"exactly one of {', '.join(classes)}"
        )
    return matches[0]



def _holds_class_folders(folder: Path) -> bool:
    return any(_images_in(d) for d in _subdirs(folder))


def _pre_split(root: Path, named: dict[str, Path | None], thesis_tests: list[Path],
               fractions: tuple[float, float, float], seed: int) -> ImageIndex:
    """The index of a folder pre-split into train/ validation/ test/ (or the thesis's)."""
    present = ", ".join(f"{d.name}/" for d in named.values() if d is not None)
    if named["train"] is None:
        raise DataError(
            f"{root} is split into {present} but has no train/ (or training/) folder; "
            "expected train/ with one sub-folder per class next to them")
    for split, folder in named.items():
        if folder is not None and not _holds_class_folders(folder):
            count = len(_images_in(folder))
            raise DataError(
                f"{folder} ({split} split) holds {count} image(s) but no class folders: "
                f"their classes are unknown; expected {folder.name}/<class>/ sub-folders, or "
                f"move unlabelled images out of {root.name}/")
    train = _class_folders(named["train"])
    _check_classes(root, train, f"{named['train'].name}/")
    classes = tuple(sorted(c for c, f in train.items() if f))
    label = {c: i for i, c in enumerate(classes)}
    files: dict[str, list[tuple[Path, int]]] = {s: [] for s in SPLITS}
    files["train"] = [(p, label[c]) for c in classes for p in train[c]]
    for split in ("validation", "test"):
        folder = named[split]
        if folder is None:
            continue
        for c, paths in _class_folders(folder).items():
            if c not in label:
                raise DataError(
                    f"{folder}/{c}: class {c!r} is not among the training classes "
                    f"({', '.join(classes)}); rename the folder or add it to "
                    f"{named['train'].name}/")
            files[split] += [(p, label[c]) for p in paths]
    layout = "pre-split"
    if named["test"] is None and thesis_tests:
        layout = "thesis"
        for folder in thesis_tests:
            idx = _match_test_class(folder.name, classes, root)
            files["test"] += [(p, idx) for p in _images_in(folder)]
    carved: dict[str, float] = {}
    if named["validation"] is None:
        # train:validation as the study's split says (70:15 by default: 17.6 % of train/)
        share = fractions[1] / (fractions[0] + fractions[1])
        labels = np.asarray([lab for _, lab in files["train"]])
        keep, held, _ = stratified_split(labels, (1.0 - share, share, 0.0), seed)
        files["validation"] = [files["train"][i] for i in held]
        files["train"] = [files["train"][i] for i in keep]
        carved["validation"] = round(share, 4)
    elif not files["validation"]:
        raise DataError(f"{named['validation']} holds no images; expected one sub-folder "
                        "per class with images in it")
    return ImageIndex(root=root, layout=layout, classes=classes, files=files, carved=carved)


def discover(root: str | Path, *, fractions: tuple[float, float, float],
             seed: int) -> ImageIndex:
    """Indexes the images under ``root``.

    Args:
        root: The data folder.
        fractions: Train/validation/test fractions for a folder that is not pre-split.
        seed: Seed of that split.

    Raises:
        DataError: Missing folder, no images, fewer than two classes, unknown test folder.
    """
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise DataError(
            f"data folder {str(root)!r} does not exist; pass $data PATH to a folder with one "
            "sub-folder per class (or train/ validation/ test/), or fix data.source in the study"
        )
    children = {d.name.lower(): d for d in _subdirs(root)}
    named = {split: next((children[n] for n in names if n in children), None)
             for split, names in _SPLIT_NAMES.items()}
    thesis_tests = sorted(d for name, d in children.items() if name.startswith("test_"))
    # Two folders named like splits make a pre-split folder (one of them without class
    # folders is refused there, never trained as a class); a lone one is a split when it
    # holds class folders (refused: no second split), a class when it holds images (a
    # "train" among vehicles).
    named_count = sum(d is not None for d in named.values())
    if thesis_tests and named["train"] is not None and named["test"] is None:
        named_count += 1
    if named_count >= 2:
        return _pre_split(root, named, thesis_tests, fractions, seed)
    lone = next(((s, d) for s, d in named.items() if d is not None), None)
    if lone is not None and _holds_class_folders(lone[1]):
        split, folder = lone
        others = ", ".join(f"{d.name}/" for d in _subdirs(root) if d != folder) or "nothing"
        raise DataError(
            f"{root} holds {folder.name}/ with class folders in it (a {split} split) next to "
            f"{others}; expected at least two of train/ validation/ test/, each with one "
            f"sub-folder per class, or the class folders directly in {root.name}/"
        )

    per_class = _class_folders(root)
    if not per_class and _images_in(root):
        raise DataError(
            f"{root} holds images but no class folders; expected one sub-folder per class "
            "(e.g. cats/ and dogs/) or train/ validation/ test/"
        )
    if not any(per_class.values()):
        raise DataError(
            f"data folder {root} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))}); "
            "expected one sub-folder per class"
        )
    _check_classes(root, per_class, "the data folder")
    classes = tuple(sorted(c for c, f in per_class.items() if f))
    flat = [(p, i) for i, c in enumerate(classes) for p in per_class[c]]
    labels = np.asarray([label for _, label in flat])
    parts = stratified_split(labels, fractions, seed)
    files = {split: [flat[i] for i in part] for split, part in zip(SPLITS, parts)}
    return ImageIndex(root=root, layout="class-folders", classes=classes, files=files)
