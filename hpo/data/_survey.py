"""``hpo init``: inspect an image folder and write a ready study file for it."""

from __future__ import annotations

import json
import statistics
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpo.data._cache import DecodedImage, decode_image, decode_threads, find_duplicates
from hpo.data._discovery import SPLITS, discover
from hpo.errors import ConfigError
from hpo.models import MODELS
from hpo.optimizers import OPTIMIZERS

__all__ = ["FolderSurvey", "survey_folder", "study_toml"]


@dataclass(frozen=True)
class FolderSurvey:
    """What ``hpo init`` found in a folder.

    Attributes:
        root: The folder.
        layout: ``pre-split``, ``thesis`` or ``class-folders``.
        classes: Class names.
        counts: Split -> class -> images.
        median_size: Median (width, height) of the readable images.
        channels: 1 if every image is grayscale, else 3.
        corrupt: Files that are not readable images.
        duplicates: The same picture more than once (:func:`hpo.data.find_duplicates`),
            across the splits a run makes with seed 0 and 70/15/15 (what the written study
            file says).
        wide: Images of more than 8 bits: ``images``, ``modes``, the range ``low``..``high``
            a run scales them by.
        carved: Split -> fraction of train/ carved out (a pre-split folder without it).
    """

    root: Path
    layout: str
    classes: tuple[str, ...]
    counts: dict[str, dict[str, int]]
    median_size: tuple[int, int]
    channels: int
    corrupt: tuple[str, ...]
    duplicates: dict[str, Any] = field(default_factory=dict)
    wide: dict[str, Any] = field(default_factory=dict)
    carved: dict[str, float] = field(default_factory=dict)

    def describe(self) -> list[str]:
        """Lines for the terminal."""
        total = sum(sum(c.values()) for c in self.counts.values())
        lines = [f"{self.root}: {total} images, {len(self.classes)} classes "
                 f"({', '.join(self.classes)}), layout {self.layout}"]
        for split in SPLITS:
            counts = self.counts.get(split, {})
            if counts:
                lines.append(f"  {split}: " + ", ".join(f"{c} {n}" for c, n in counts.items()))
        lines.append(f"  median size {self.median_size[0]}x{self.median_size[1]}, "
                     f"{'grayscale' if self.channels == 1 else 'color'}")
        for split, share in self.carved.items():
            lines.append(f"  no {split}/ folder: a run carves {100 * share:.1f}% of train/ "
                         f"per class as {split} (seeded)")
        if self.wide.get("images"):
            modes = ", ".join(f"{m} {n}" for m, n in self.wide["modes"].items())
            lines.append(f"  {self.wide['images']} image(s) of more than 8 bits ({modes}): "
                         f"scaled to 8 bits by the folder's range {self.wide['low']:g}.."
                         f"{self.wide['high']:g}")
        if self.corrupt:
            lines.append(f"  {len(self.corrupt)} unreadable file(s), skipped in runs; first: "
                         f"{self.corrupt[0]}")
        dup = self.duplicates
        if dup.get("across_splits") or dup.get("across_classes"):
            lines.append(
                f"  warning: the same image in two splits ({dup['across_splits']} images) or "
                f"under two classes ({dup['across_classes']} images), e.g. "
                f"{' and '.join(dup['examples'][0])}: test and validation scores would count "
                "seen images as unseen; remove the copies (hpo run --strict stops on them)")
        if dup.get("within"):
            lines.append(f"  {dup['within']} further identical copies within a class and "
                         "split")
        return lines


def survey_folder(root: str | Path, *, seed: int = 0) -> FolderSurvey:
    """Inspects ``root``: layout, classes, counts, image sizes, unreadable files, images of
    more than 8 bits, and the same picture twice (every image is decoded, on all cores).

    Raises:
        DataError: Missing or empty folder, fewer than two classes.
    """
    from PIL import Image

    index = discover(root, fractions=(0.70, 0.15, 0.15), seed=seed)

    def read(path: Path) -> tuple[DecodedImage, tuple[int, int]] | None:
        try:
            with Image.open(path) as image:
                image.verify()
            with Image.open(path) as image:
                size = image.size
            decoded = decode_image(path, (8, 8), 3)  # its content hash; 8x8: cheap resize
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            return None
        return decoded, size

    items = [(split, path, label) for split in SPLITS for path, label in index.files[split]]
    with ThreadPoolExecutor(max_workers=decode_threads()) as pool:
        results = list(pool.map(lambda item: read(item[1]), items))
    counts: dict[str, dict[str, int]] = {split: {} for split in SPLITS}
    widths, heights, corrupt, hashed = [], [], [], []
    wide: dict[str, Any] = {"images": 0, "modes": {}, "low": None, "high": None}
    grayscale = True
    for (split, path, label), result in zip(items, results):
        if result is None:
            corrupt.append(str(path))
            continue
        decoded, (width, height) = result
        widths.append(width)
        heights.append(height)
        grayscale &= decoded.wide or decoded.mode in ("L", "1", "LA", "La")
        if decoded.wide:
            wide["images"] += 1
            wide["modes"][decoded.mode] = wide["modes"].get(decoded.mode, 0) + 1
            wide["low"] = decoded.low if wide["low"] is None else min(wide["low"], decoded.low)
            wide["high"] = decoded.high if wide["high"] is None else \
                max(wide["high"], decoded.high)
        hashed.append((decoded.digest, split, label, str(path)))
        name = index.classes[label]
        counts[split][name] = counts[split].get(name, 0) + 1
    size = (int(statistics.median(widths)), int(statistics.median(heights))) if widths \
        else (0, 0)
    return FolderSurvey(root=index.root, layout=index.layout, classes=index.classes,
                        counts=counts, median_size=size, channels=1 if grayscale else 3,
                        corrupt=tuple(corrupt), duplicates=find_duplicates(hashed),
                        wide=wide if wide["images"] else {}, carved=dict(index.carved))


def default_architecture(survey: FolderSurvey) -> str:
    """AlexNet (the thesis's scratch model) for photos, the small CNN for small images."""
    return "alexnet" if min(survey.median_size) >= 128 and survey.channels == 3 else "small_cnn"


def study_toml(survey: FolderSurvey, *, name: str, architecture: str) -> str:
    """A study file with the thesis grid and a TPE space for ``survey``'s folder.

    Raises:
        ConfigError: Unknown architecture, or one that needs 3 channels for gray images.
    """
    if architecture not in MODELS:
        raise ConfigError(f"unknown architecture {architecture!r}; expected one of "
                          f"{', '.join(sorted(MODELS))}")
    spec = MODELS[architecture]
    height, width = spec.default_image_size
    optimizers = ", ".join(f'"{o}"' for o in OPTIMIZERS)
    weights = '\nweights = "imagenet"   # from the Keras cache or a file path; "none": scratch' \
        if spec.transfer else ""
    channels = 3 if spec.transfer else survey.channels
    return f'''# Written by `hpo init` for {survey.root}
# {len(survey.classes)} classes: {", ".join(survey.classes)}; layout {survey.layout}
name = {json.dumps(name)}
description = {json.dumps(f"{architecture} on {survey.root.name}: the thesis grid")}
metric = "val_accuracy"
seed = 0
pruner = "none"

[data]
source = {json.dumps(str(survey.root))}
channels = {channels}
split = [0.70, 0.15, 0.15]

[training]
architecture = "{architecture}"
optimizer = "Adam"
learning_rate = 0.001
batch_size = 32
epochs = 10

[architectures.{architecture}]
image_size = [{height}, {width}]{weights}

# The thesis grid: 8 optimizers x 4 batch sizes x 3 learning rates x 2 epoch budgets = 192.
[grid]
optimizer = [{optimizers}]
batch_size = [32, 64, 128, 256]
learning_rate = [0.01, 0.001, 0.0001]
epochs = [10, 200]

# For --sampler tpe: a continuous learning rate, optimizer internals, regularisation.
[space.optimizer]
choices = [{optimizers}]

[space.learning_rate]
low = 1e-5
high = 1e-1
log = true

[space.batch_size]
choices = [32, 64, 128, 256]

[space.epochs]
low = 5
high = 100
log = true

[space.momentum]
low = 0.0
high = 0.99
when = {{ optimizer = ["SGD", "RMSprop"] }}

[space.dropout]
low = 0.0
high = 0.6
'''
