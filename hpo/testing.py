"""Helpers for tests of ``hpo`` and of projects built on it: tiny image folders and studies.

Everything here generates its data; nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["make_image_folder", "write_study", "TINY_STUDY"]


def _pattern(label: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """An RGB image a small CNN learns quickly: class 0 horizontal stripes, 1 vertical."""
    base = np.zeros((size, size), dtype=np.float64)
    stripes = (np.arange(size) // max(1, size // 8)) % 2 == 0
    if label % 2 == 0:
        base[stripes, :] = 1.0
    else:
        base[:, stripes] = 1.0
    base += 0.25 * label // 2
    noise = rng.normal(0.0, 0.15, size=(size, size, 3))
    image = np.clip(base[..., None] * 200 + 25 + noise * 255, 0, 255)
    return image.astype(np.uint8)


def make_image_folder(
    root: str | Path,
    *,
    classes: Sequence[str] = ("cats", "dogs"),
    per_class: int = 20,
    size: int = 24,
    layout: str = "class-folders",
    corrupt: int = 0,
    fmt: str = "png",
    seed: int = 0,
) -> Path:
    """Writes a folder of generated images.

    Args:
        root: Folder to create.
        classes: Class names (one sub-folder each).
        per_class: Images per class (per split for the pre-split layouts).
        size: Width and height in pixels.
        layout: ``class-folders``, ``pre-split`` (train/ validation/ test/) or ``thesis``
            (Train/ Validation/ Test_<first letter of class>/).
        corrupt: Extra files per class that end in the image suffix but are not images.
        fmt: ``png`` or ``jpg``.
        seed: Seed of the noise.

    Returns:
        ``root`` as a Path.
    """
    from PIL import Image

    root = Path(root)
    rng = np.random.default_rng(seed)
    if layout == "class-folders":
        folders = {c: [root / c] for c in classes}
    elif layout == "pre-split":
        folders = {c: [root / s / c for s in ("train", "validation", "test")] for c in classes}
    elif layout == "thesis":
        folders = {c: [root / "Train" / c, root / "Validation" / c, root / f"Test_{c[0]}"]
                   for c in classes}
    else:
        raise ValueError(f"unknown layout {layout!r}")
    for label, name in enumerate(classes):
        for folder in folders[name]:
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                Image.fromarray(_pattern(label, size, rng)).save(folder / f"{name}_{i:04d}.{fmt}")
            for i in range(corrupt):
                (folder / f"broken_{i}.{fmt}").write_bytes(b"this is not an image")
    return root


TINY_STUDY = """\
name = "{name}"
description = "tiny generated study for tests"
metric = "val_accuracy"
seed = 0
pruner = "{pruner}"

[data]
source = "{data}"
channels = 3

[training]
architecture = "small_cnn"
optimizer = "Adam"
learning_rate = 0.01
batch_size = 16
epochs = {epochs}

[architectures.small_cnn]
image_size = [16, 16]
dense_units = 16
filters = 8

[grid]
optimizer = ["Adam", "SGD"]
learning_rate = [0.01, 0.001]
{extra_grid}
[space.optimizer]
choices = ["Adam", "SGD"]

[space.learning_rate]
low = 0.0001
high = 0.1
log = true

[space.momentum]
low = 0.0
high = 0.9
when = {{ optimizer = ["SGD"] }}
"""


def write_study(path: str | Path, *, data: str | Path, name: str = "tiny", epochs: int = 1,
                pruner: str = "none", extra_grid: str = "") -> Path:
    """Writes a tiny study file (a 2x2 grid of a small CNN at 16x16) and returns its path.

    Args:
        path: The ``.toml`` file to write.
        data: Its data folder.
        name: Study name.
        epochs: Epochs per trial.
        pruner: Pruner name.
        extra_grid: More ``[grid]`` lines, e.g. ``'batch_size = [8, 16]'``.
    """
    path = Path(path)
    path.write_text(TINY_STUDY.format(name=name, data=str(data), epochs=epochs, pruner=pruner,
                                      extra_grid=extra_grid + "\n" if extra_grid else ""))
    return path
