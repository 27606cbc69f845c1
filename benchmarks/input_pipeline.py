"""Input pipeline: images/s fed to training, hpo's decode-once cache vs the thesis way.

Generates a folder of JPEGs at the thesis's 227x227 (two classes), then, side by side in one
process on the same folder:

* thesis: ``keras.utils.image_dataset_from_directory`` (tf.data), which decodes and resizes
  every JPEG again in every epoch;
* hpo cache build: the one-off decode into the uint8 cache (``hpo.data.load_dataset``);
* hpo float32: one epoch of ``ArrayBatches`` from the memory-mapped cache, cast on the host;
* hpo uint8: the same batches left as uint8, cast to float by the model on the device.

Each fed epoch is timed twice and the faster kept. Needs the TensorFlow backend (the thesis
way is tf.data). Results go to stdout and ``--out`` (JSON).

    python benchmarks/input_pipeline.py --images 2000 --out results/input_pipeline.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from hpo.config import DataConfig  # noqa: E402
from hpo.data import (
    ArrayBatches,  # noqa: E402
    load_dataset,  # noqa: E402
)


def make_jpegs(root: Path, n: int, size: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    for i in range(n):
        folder = root / ("True" if i % 2 else "False")
        folder.mkdir(parents=True, exist_ok=True)
        shifted = np.roll(base, i, axis=(0, 1))  # smooth-ish content, realistic JPEG sizes
        Image.fromarray(shifted).resize((size + i % 7, size - i % 5)).save(
            folder / f"img_{i:05d}.jpg", quality=90)


def best_of_two(fn) -> float:
    times = []
    for _ in range(2):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--size", type=int, default=227)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    import keras

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "images"
        make_jpegs(root, args.images, args.size)
        n = args.images

        def thesis_epoch() -> None:
            ds = keras.utils.image_dataset_from_directory(
                root, image_size=(args.size, args.size), batch_size=args.batch_size,
                shuffle=True, seed=0, verbose=False)
            for _ in ds:
                pass

        thesis_s = best_of_two(thesis_epoch)

        start = time.perf_counter()
        data = load_dataset(DataConfig(source=str(root), split=(0.98, 0.01, 0.01)),
                            (args.size, args.size), cache_dir=Path(tmp) / "cache")
        build_s = time.perf_counter() - start
        train = data.train
        fed = len(train)

        def hpo_epoch(dtype) -> None:
            batches = ArrayBatches(train.x, train.y, batch_size=args.batch_size, shuffle=True,
                                   seed=0, dtype=dtype)
            for i in range(len(batches)):
                batches[i]
            batches.on_epoch_end()

        float_s = best_of_two(lambda: hpo_epoch(np.float32))
        uint8_s = best_of_two(lambda: hpo_epoch(np.uint8))

    rows = {
        "thesis_image_dataset_from_directory": n / thesis_s,
        "hpo_cache_build_once": n / build_s,
        "hpo_cache_float32": fed / float_s,
        "hpo_cache_uint8": fed / uint8_s,
    }
    for name, rate in rows.items():
        print(f"{name:40s} {rate:10.0f} images/s")
    print(f"hpo uint8 / thesis: {rows['hpo_cache_uint8'] / rows['thesis_image_dataset_from_directory']:.1f}x;"
          f" float32 / thesis: {rows['hpo_cache_float32'] / rows['thesis_image_dataset_from_directory']:.1f}x;"
          f" uint8 / float32: {rows['hpo_cache_uint8'] / rows['hpo_cache_float32']:.1f}x")
    if args.out:
        args.out.write_text(json.dumps({
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.node()}",
            "images": n, "size": args.size, "batch_size": args.batch_size,
            "images_per_s": rows}, indent=2))


if __name__ == "__main__":
    main()
