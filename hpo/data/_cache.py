"""Decode every image once into uint8 ``.npy`` files that every trial and worker memory-maps.

A cache entry is a folder named by a hash of what it was built from (file names, sizes and
modification times, labels, split, image size, channels). It is written to a temporary
folder and renamed into place, so concurrent workers never see a half-written cache: the
first rename wins and the others reuse it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from hpo.data._progress import DecodeProgress
from hpo.errors import DataError

__all__ = ["CACHE_VERSION", "default_cache_dir", "cache_key", "build_entry", "decode_image",
           "decode_threads"]

_log = logging.getLogger("hpo.data")
CACHE_VERSION = 1


def default_cache_dir() -> Path:
    """``$HPO_CACHE_DIR``, else ``~/.cache/hpo``."""
    env = os.environ.get("HPO_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "hpo"


def cache_key(parts: Iterable[object]) -> str:
    """A hex digest of ``parts`` (anything ``json`` can write, paths as strings)."""
    digest = hashlib.sha256()
    digest.update(json.dumps([CACHE_VERSION, *parts], default=str).encode())
    return digest.hexdigest()[:24]


def decode_image(path: Path, size: tuple[int, int], channels: int) -> np.ndarray:
    """Decodes one image file to a (height, width, channels) uint8 array.

    Raises:
        OSError, ValueError: The file is not a readable image (Pillow's errors), or its
            header claims more pixels than Pillow's decompression-bomb limit.
    """
    from PIL import Image

    try:
        with Image.open(path) as image:
            image = image.convert("L" if channels == 1 else "RGB")
            height, width = size
            if image.size != (width, height):
                image = image.resize((width, height), Image.Resampling.BILINEAR)
            array = np.asarray(image, dtype=np.uint8)
    except Image.DecompressionBombError as exc:  # not an OSError: an unreadable image too
        raise ValueError(f"not decoded, a possible decompression bomb ({exc})") from None
    return array.reshape(height, width, channels)


def decode_threads() -> int:
    """Threads that decode images: two per core this process may use (Pillow releases the
    GIL while it decodes and resizes; the second one covers file reads)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(64, 2 * cores))


def _write_split(folder: Path, split: str, paths: Sequence[Path], labels: Sequence[int],
                 size: tuple[int, int], channels: int, strict: bool,
                 skipped: list[str], progress: DecodeProgress) -> None:
    height, width = size
    n = len(paths)
    x = np.lib.format.open_memmap(folder / f"{split}_x.npy", mode="w+", dtype=np.uint8,
                                  shape=(n, height, width, channels))
    ok = np.ones(n, dtype=bool)

    def work(i: int) -> None:
        try:
            x[i] = decode_image(paths[i], size, channels)
        except (OSError, ValueError, SyntaxError) as exc:
            if strict:
                raise DataError(
                    f"cannot read image {paths[i]} ({exc.__class__.__name__}: {exc}); remove "
                    "or replace the file, or run without $strict to skip unreadable images"
                ) from None
            ok[i] = False
            skipped.append(f"{paths[i]}: {exc}")
        progress.advance()

    with ThreadPoolExecutor(max_workers=decode_threads()) as pool:
        list(pool.map(work, range(n)))
    y = np.asarray(labels, dtype=np.int64)
    if not ok.all():
        keep = np.flatnonzero(ok)
        compact = np.lib.format.open_memmap(folder / f"{split}_x.tmp.npy", mode="w+",
                                            dtype=np.uint8,
                                            shape=(len(keep), height, width, channels))
        for start in range(0, len(keep), 512):
            chunk = keep[start:start + 512]
            compact[start:start + len(chunk)] = x[chunk]
        compact.flush()
        del compact
        y = y[keep]
    x.flush()
    del x
    if not ok.all():
        os.replace(folder / f"{split}_x.tmp.npy", folder / f"{split}_x.npy")
    np.save(folder / f"{split}_y.npy", y)


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
        meta: Facts stored in ``meta.json`` (classes, source, layout).
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
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{key}-", dir=cache_dir))
    except OSError as exc:
        raise DataError(f"cannot write the image cache in {cache_dir} ({exc}); pass "
                        "$cache_dir to a writable folder or set HPO_CACHE_DIR") from None
    try:
        skipped: list[str] = []
        if arrays is not None:
            for split, (x, y) in arrays().items():
                np.save(tmp / f"{split}_x.npy", x.astype(np.uint8, copy=False))
                np.save(tmp / f"{split}_y.npy", y.astype(np.int64, copy=False))
        else:
            progress = DecodeProgress(sum(len(paths) for paths, _ in splits.values()),
                                      f"decoding images into the cache ({size[0]}x{size[1]})",
                                      shown=_log.isEnabledFor(logging.INFO))
            try:
                for split, (paths, labels) in splits.items():
                    _write_split(tmp, split, paths, labels, size, channels, strict, skipped,
                                 progress)
            finally:
                progress.close()
        if skipped:
            _log.warning("skipped %d unreadable image(s); first: %s", len(skipped), skipped[0])
        (tmp / "meta.json").write_text(json.dumps({**meta, "skipped": skipped}, default=str))
        try:
            os.rename(tmp, entry)
        except OSError:
            # Another worker finished the same entry first: use theirs.
            if not (entry / "meta.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return entry
