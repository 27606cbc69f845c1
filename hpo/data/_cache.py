"""Decode every image once into uint8 ``.npy`` files that every trial and worker memory-maps.

A cache entry is a folder named by a hash of what it was built from (file names, sizes and
modification times, labels, split, image size, channels, and :data:`CACHE_VERSION`, the
version of the decoding below). It is written to a temporary folder and renamed into place,
so concurrent workers never see a half-written cache: the first rename wins and the others
reuse it.

What the pixels are:

* 8-bit images (JPEG, 8-bit PNG, palette, bilevel, CMYK...) are Pillow's conversion to
  grey (``L``) or ``RGB``, unchanged since version 1 of the cache;
* an image with transparency (``RGBA``, ``LA``, a palette or colour key with transparency)
  is shown over white, as an image viewer on a light page shows it: the colour under a
  transparent pixel, which nobody sees, is not what the model sees either;
* wider images (16-bit grey PNG ``I;16``/``I;16B``, 32-bit integer ``I``, floating-point
  TIFF ``F``) are scaled linearly from the lowest to the highest value of all the folder's
  wide images (every split), so that one stored value is one 8-bit value in every image:
  two images stay comparable (a dark and a bright X-ray do not both become full-contrast),
  and a 12-bit sensor's values in a 16-bit file use all 256 levels, not the lowest 16. No
  value is clipped; a folder whose wide images hold one value throughout maps it to 0;
  NaN takes an image's lowest finite value, an infinity its lowest or highest;
* 16-bit colour PNGs are read by Pillow at 8 bits (the high byte of each value: the 16-bit
  range scaled to 8 bits).

Each image's content hash (of its decoded pixels at full size, in RGB, or its raw values
when wide, before any resize) is kept in ``meta.json``: the same picture in two splits or two
classes is reported (:func:`find_duplicates`) whatever its file name, format or metadata.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
import tempfile
import threading
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from hpo.data._progress import DecodeProgress
from hpo.errors import DataError

__all__ = ["CACHE_VERSION", "default_cache_dir", "cache_key", "build_entry", "decode_image",
           "decode_threads", "DecodedImage", "scale_to_uint8", "find_duplicates"]

_log = logging.getLogger(__name__)
#: 2: wide images scaled by the folder's range (were clipped at 255), transparency over
#: white (was dropped), content hashes in meta.json.
CACHE_VERSION = 2
_WHITE = (255, 255, 255, 255)


def default_cache_dir() -> Path:
    """``$HPO_CACHE_DIR``, else ``~/.cache/hpo``."""
    env = os.environ.get("HPO_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "hpo"


def cache_key(parts: Iterable[object]) -> str:
    """A hex digest of ``parts`` (anything ``json`` can write, paths as strings)."""
    digest = hashlib.sha256()
    digest.update(json.dumps([CACHE_VERSION, *parts], default=str).encode())
    return digest.hexdigest()[:24]


@dataclass(frozen=True)
class DecodedImage:
    """One decoded, resized image.

    Attributes:
        pixels: (height, width, channels): uint8, or float32 raw values when ``wide``.
        wide: More than 8 bits per value (``I;16``, ``I``, ``F``): scale ``pixels`` with
            :func:`scale_to_uint8` by the range of all the folder's wide images.
        low: Lowest raw value at full size (wide images; 0 otherwise).
        high: Highest raw value at full size (wide images; 255 otherwise).
        mode: Pillow's mode of the file (``RGB``, ``I;16``...).
        digest: Hash of the full-size decoded pixels (see the module's doc).
    """

    pixels: np.ndarray
    wide: bool
    low: float
    high: float
    mode: str
    digest: str


def _is_wide(mode: str) -> bool:
    return mode in ("I", "F") or mode.startswith("I;")


def _has_transparency(image: Any) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or \
        "transparency" in image.info


def _hash(kind: str, array: np.ndarray) -> str:
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{kind}{array.shape}".encode())
    digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def scale_to_uint8(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """``values`` in ``low..high`` mapped linearly to 0..255 (rounded); all 0 when
    ``high <= low`` (a constant range). Values lie in the range by construction (a bilinear
    resize stays between its inputs): the clip only absorbs float rounding."""
    if not high > low:
        return np.zeros(values.shape, dtype=np.uint8)
    out = (np.asarray(values, dtype=np.float64) - low) * (255.0 / (high - low))
    return np.rint(np.clip(out, 0.0, 255.0, out=out)).astype(np.uint8)


def _wide_values(image: Any) -> tuple[np.ndarray, float, float]:
    """Raw values of a wide image (float64), non-finite ones replaced, and their range."""
    values = np.asarray(image).astype(np.float64)
    finite = np.isfinite(values)
    if values.size == 0 or not finite.any():
        return np.zeros(values.shape), 0.0, 0.0
    low, high = float(values[finite].min()), float(values[finite].max())
    if not finite.all():
        values = np.where(np.isnan(values), low, np.clip(values, low, high))
    return values, low, high


def decode_image(path: Path, size: tuple[int, int], channels: int) -> DecodedImage:
    """Decodes one image file and resizes it to ``size`` (height, width), bilinear.

    Raises:
        OSError, ValueError: The file is not a readable image (Pillow's errors), or its
            header claims more pixels than Pillow's decompression-bomb limit.
    """
    from PIL import Image

    height, width = size
    try:
        with Image.open(path) as image:
            mode = image.mode
            if _is_wide(mode):
                values, low, high = _wide_values(image)
                digest = _hash("wide", values)
                plane = Image.fromarray(values.astype(np.float32))
                if plane.size != (width, height):
                    plane = plane.resize((width, height), Image.Resampling.BILINEAR)
                wide = np.asarray(plane, dtype=np.float32).reshape(height, width, 1)
                if channels == 3:
                    wide = np.repeat(wide, 3, axis=-1)
                return DecodedImage(wide, True, low, high, mode, digest)
            shown: Image.Image = image
            if _has_transparency(image):
                shown = Image.alpha_composite(Image.new("RGBA", image.size, _WHITE),
                                              image.convert("RGBA"))
            rgb = shown.convert("RGB")
            digest = _hash("rgb", np.asarray(rgb))
            shown = rgb if channels == 3 else shown.convert("L")
            if shown.size != (width, height):
                shown = shown.resize((width, height), Image.Resampling.BILINEAR)
            array = np.asarray(shown, dtype=np.uint8).reshape(height, width, channels)
    except Image.DecompressionBombError as exc:  # not an OSError: an unreadable image too
        raise ValueError(f"not decoded, a possible decompression bomb ({exc})") from None
    return DecodedImage(array, False, 0.0, 255.0, mode, digest)


def decode_threads() -> int:
    """Threads that decode images: two per core this process may use (Pillow releases the
    GIL while it decodes and resizes; the second one covers file reads)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(64, 2 * cores))


class _SplitDecode:
    """One split being decoded into ``{split}_x.npy``: 8-bit images straight in, wide ones
    (raw values, float32) into ``{split}_raw.npy`` until the folder's range is known."""

    def __init__(self, folder: Path, split: str, paths: Sequence[Path], labels: Sequence[int],
                 size: tuple[int, int], channels: int) -> None:
        self.folder, self.split, self.paths = folder, split, paths
        self.labels = np.asarray(labels, dtype=np.int64)
        self.shape = (len(paths), size[0], size[1], channels)
        self.x = np.lib.format.open_memmap(folder / f"{split}_x.npy", mode="w+",
                                           dtype=np.uint8, shape=self.shape)
        self.ok = np.ones(len(paths), dtype=bool)
        self.digests: list[str | None] = [None] * len(paths)
        self.wide: dict[int, tuple[float, float]] = {}  # row -> raw range
        self.modes: dict[str, int] = {}
        self._raw: np.ndarray | None = None
        self._lock = threading.Lock()

    def put(self, i: int, image: DecodedImage) -> None:
        self.digests[i] = image.digest
        if image.wide:
            with self._lock:
                if self._raw is None:
                    self._raw = np.lib.format.open_memmap(
                        self.folder / f"{self.split}_raw.npy", mode="w+", dtype=np.float32,
                        shape=self.shape)
                self.wide[i] = (image.low, image.high)
                self.modes[image.mode] = self.modes.get(image.mode, 0) + 1
            self._raw[i] = image.pixels
        else:
            self.x[i] = image.pixels

    def finish(self, low: float, high: float) -> None:
        """Scales the wide rows by the folder's range, drops unreadable rows, writes the
        labels."""
        if self._raw is not None:
            for i in sorted(self.wide):
                self.x[i] = scale_to_uint8(self._raw[i], low, high)
            del self._raw
            self._raw = None
            os.remove(self.folder / f"{self.split}_raw.npy")
        y = self.labels
        if not self.ok.all():
            keep = np.flatnonzero(self.ok)
            compact = np.lib.format.open_memmap(self.folder / f"{self.split}_x.tmp.npy",
                                                mode="w+", dtype=np.uint8,
                                                shape=(len(keep), *self.shape[1:]))
            for start in range(0, len(keep), 512):
                chunk = keep[start:start + 512]
                compact[start:start + len(chunk)] = self.x[chunk]
            compact.flush()
            del compact
            y = y[keep]
        self.x.flush()
        del self.x
        if not self.ok.all():
            os.replace(self.folder / f"{self.split}_x.tmp.npy",
                       self.folder / f"{self.split}_x.npy")
        np.save(self.folder / f"{self.split}_y.npy", y)


def _decode_split(job: _SplitDecode, size: tuple[int, int], channels: int, strict: bool,
                  skipped: list[str], progress: DecodeProgress) -> None:
    def work(i: int) -> None:
        path = job.paths[i]
        try:
            job.put(i, decode_image(path, size, channels))
        except (OSError, ValueError, SyntaxError) as exc:
            if strict:
                raise DataError(
                    f"cannot read image {path} ({exc.__class__.__name__}: {exc}); remove "
                    "or replace the file, or run without $strict to skip unreadable images"
                ) from None
            job.ok[i] = False
            skipped.append(f"{path}: {exc}")
        progress.advance()

    with ThreadPoolExecutor(max_workers=decode_threads()) as pool:
        list(pool.map(work, range(len(job.paths))))


def find_duplicates(items: Iterable[tuple[str, str, int, str]],
                    examples: int = 3) -> dict[str, object]:
    """The same picture more than once, from (digest, split, label, path) of every image.

    Returns:
        ``across_splits``: images with an identical copy in another split (it leaks: a
        test or validation score counts it as unseen); ``across_classes``: images with an
        identical copy under another class (contradictory labels); ``within``: further
        copies in the same split and class; ``examples``: a few pairs of paths, the leaks
        first.
    """
    groups: dict[str, list[tuple[str, int, str]]] = defaultdict(list)
    for digest, split, label, path in items:
        groups[digest].append((split, label, path))
    counts = {"across_splits": 0, "across_classes": 0, "within": 0}
    leaks: list[list[str]] = []
    others: list[list[str]] = []
    for members in groups.values():
        if len(members) < 2:
            continue
        splits = {m[0] for m in members}
        labels = {m[1] for m in members}
        for split, label, _ in members:
            counts["across_splits"] += any(s != split for s, _, _ in members)
            counts["across_classes"] += any(lab != label for _, lab, _ in members)
        counts["within"] += len(members) - len({(s, lab) for s, lab, _ in members})
        pair = [members[0][2], next((m[2] for m in members[1:] if (m[0], m[1]) !=
                                     (members[0][0], members[0][1])), members[1][2])]
        (leaks if len(splits) > 1 or len(labels) > 1 else others).append(pair)
    return {**counts, "examples": (leaks + others)[:examples]}


def build_entry(
    cache_dir: Path,
    key: str,
    *,
    splits: dict[str, tuple[Sequence[Path], Sequence[int]]],
    size: tuple[int, int],
    channels: int,
    meta: dict[str, object],
    strict: bool,
    arrays: Callable[[], dict[str, tuple[np.ndarray, np.ndarray]]] | None = None,
) -> Path:
    """Returns the cache folder for ``key``, building it first if it does not exist.

    Args:
        cache_dir: Where cache entries live.
        key: The entry's hash.
        splits: Split -> (image paths, labels) to decode.
        size: (height, width).
        channels: 1 or 3.
        meta: Facts stored in ``meta.json`` (classes, source, layout); the build adds
            ``skipped`` (unreadable files), ``duplicates`` (:func:`find_duplicates`) and
            ``wide`` (how many wide images, their modes and the range they were scaled by).
        strict: Raise on the first unreadable image instead of skipping it.
        arrays: Instead of files, a function returning split -> (uint8 images, labels)
            already decoded (bundled data sets).

    Raises:
        DataError: An image is unreadable under ``strict``, or the cache cannot be written.
    """
    entry = cache_dir / key
    if (entry / "meta.json").is_file():
        return entry
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        _remove_dead_builds(cache_dir)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{key}-{_BUILDER}-", dir=cache_dir))
    except OSError as exc:
        raise DataError(f"cannot write the image cache in {cache_dir} ({exc}); pass "
                        "$cache_dir to a writable folder or set HPO_CACHE_DIR") from None
    try:
        skipped: list[str] = []
        facts: dict[str, object] = {}
        if arrays is not None:
            for split, (x, y) in arrays().items():
                np.save(tmp / f"{split}_x.npy", x.astype(np.uint8, copy=False))
                np.save(tmp / f"{split}_y.npy", y.astype(np.int64, copy=False))
        else:
            facts = _decode_all(tmp, splits, size, channels, strict, skipped)
        meta = {**meta, **facts, "skipped": skipped}
        (tmp / "meta.json").write_text(json.dumps(meta, default=str))
        try:
            os.rename(tmp, entry)
        except OSError:
            # Another worker finished the same entry first: use theirs.
            if not (entry / "meta.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return entry


#: Who builds: host and process, in the name of a build's temporary folder, so that the
#: folder of a build killed mid-way (``kill -9``, the OOM killer) is found and removed.
_BUILDER = f"{socket.gethostname().replace('-', '_')}-{os.getpid()}"


def _remove_dead_builds(cache_dir: Path) -> None:
    """Removes the temporary folders of builds on this host whose process is gone (they
    would otherwise stay for good, as large as the images decoded so far)."""
    host = socket.gethostname().replace("-", "_")
    for folder in cache_dir.glob(".tmp-*"):
        parts = folder.name.split("-")  # .tmp, key, host, pid, random
        if len(parts) < 5 or parts[2] != host or not parts[3].isdigit():
            continue
        try:
            os.kill(int(parts[3]), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except PermissionError:
            continue  # another user's live process


def _decode_all(folder: Path, splits: dict[str, tuple[Sequence[Path], Sequence[int]]],
                size: tuple[int, int], channels: int, strict: bool,
                skipped: list[str]) -> dict[str, object]:
    """Decodes every split into ``folder``; returns the facts for ``meta.json``."""
    progress = DecodeProgress(sum(len(paths) for paths, _ in splits.values()),
                              f"decoding images into the cache ({size[0]}x{size[1]})",
                              shown=_log.isEnabledFor(logging.INFO))
    jobs = [_SplitDecode(folder, split, paths, labels, size, channels)
            for split, (paths, labels) in splits.items()]
    try:
        for job in jobs:
            _decode_split(job, size, channels, strict, skipped, progress)
    finally:
        progress.close()
    ranges = [r for job in jobs for r in job.wide.values()]
    low = min((r[0] for r in ranges), default=0.0)
    high = max((r[1] for r in ranges), default=0.0)
    modes: dict[str, int] = {}
    for job in jobs:
        for mode, n in job.modes.items():
            modes[mode] = modes.get(mode, 0) + n
        job.finish(low, high)
    duplicates = find_duplicates(
        (digest, job.split, int(job.labels[i]), str(job.paths[i]))
        for job in jobs for i in range(len(job.paths))
        if job.ok[i] and (digest := job.digests[i]) is not None)  # a decoded image has one
    # what the images are, not only what they are called: a study's identity holds it, so
    # that --data at other pictures under the same names is refused (hpo.study._identity)
    content = hashlib.sha256(json.dumps(sorted(
        (job.split, int(job.labels[i]), str(job.digests[i]))
        for job in jobs for i in range(len(job.paths)) if job.ok[i])).encode()).hexdigest()
    return {"duplicates": duplicates, "content": content[:16],
            "wide": {"images": len(ranges), "modes": modes, "low": low, "high": high}}
