"""Find the images of a folder and how it is split.

Three layouts are understood:

* pre-split: ``train/``, ``validation/`` (or ``val/``, ``valid/``) and optionally ``test/``,
  each holding one sub-folder per class (any capitalisation);
* the thesis's: ``Train/<class>/``, ``Validation/<class>/`` and ``Test_<C>/`` where ``<C>``
  names (or starts) a class, e.g. ``Test_T/`` for class ``True``;
* one sub-folder per class, split train/validation/test by the study's fractions,
  stratified and seeded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hpo.errors import DataError

__all__ = ["IMAGE_EXTENSIONS", "ImageIndex", "discover", "stratified_split"]

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
    """

    root: Path
    layout: str
    classes: tuple[str, ...]
    files: dict[str, list[tuple[Path, int]]]


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*")
                  if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _class_folders(folder: Path) -> dict[str, list[Path]]:
    return {d.name: _images_in(d) for d in _subdirs(folder)}


def stratified_split(labels: np.ndarray, fractions: tuple[float, float, float],
                     seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Splits indices of ``labels`` into train/validation/test, per class, seeded.

    Each class with at least 3 items puts at least one in every split.
    """
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[], [], []]
    for label in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == label))
        n = len(idx)
        n_val = max(1, round(n * fractions[1])) if n >= 3 else 0
        n_test = max(1, round(n * fractions[2])) if n >= 3 else 0
        n_train = n - n_val - n_test
        parts[0] += idx[:n_train].tolist()
        parts[1] += idx[n_train:n_train + n_val].tolist()
        parts[2] += idx[n_train + n_val:].tolist()
    return tuple(np.sort(np.asarray(p, dtype=np.int64)) for p in parts)  # type: ignore[return-value]


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
    found = {split: next((children[n] for n in names if n in children), None)
             for split, names in _SPLIT_NAMES.items()}
    thesis_tests = sorted(d for name, d in children.items() if name.startswith("test_"))
    if found["train"] is not None and found["validation"] is not None:
        train = _class_folders(found["train"])
        _check_classes(root, train, f"{found['train'].name}/")
        classes = tuple(sorted(c for c, f in train.items() if f))
        label = {c: i for i, c in enumerate(classes)}
        files: dict[str, list[tuple[Path, int]]] = {s: [] for s in SPLITS}
        files["train"] = [(p, label[c]) for c in classes for p in train[c]]
        for split in ("validation", "test"):
            if found[split] is None:
                continue
            for c, paths in _class_folders(found[split]).items():
                if c not in label:
                    raise DataError(
                        f"{found[split]}/{c}: class {c!r} is not among the training classes "
                        f"({', '.join(classes)}); rename the folder or add it to train/"
                    )
                files[split] += [(p, label[c]) for p in paths]
        layout = "pre-split"
        if found["test"] is None and thesis_tests:
            layout = "thesis"
            for folder in thesis_tests:
                idx = _match_test_class(folder.name, classes, root)
                files["test"] += [(p, idx) for p in _images_in(folder)]
        if not files["validation"]:
            raise DataError(f"{found['validation']} holds no images; expected one sub-folder "
                            "per class with images in it")
        return ImageIndex(root=root, layout=layout, classes=classes, files=files)

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
