"""Training throughput of the thesis's CNNs as hpo feeds them: images/s and MFU.

For each architecture, batch size and precision: build the model exactly as a trial does,
compile it, feed batches from a uint8 array through hpo's ArrayBatches, run one warm-up
epoch (compilation), then time ``--steps`` training steps. MFU = achieved FLOP/s over the
peak given (H100 SXM dense: 989 TFLOP/s bf16/fp16, 494 TFLOP/s TF32).

    KERAS_BACKEND=jax python benchmarks/gpu_throughput.py --out results.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from _flops import training_flops_per_image  # noqa: E402

from hpo.data import ArrayBatches  # noqa: E402
from hpo.models import MODELS, build_model  # noqa: E402
from hpo.optimizers import build_optimizer  # noqa: E402
from hpo.trial import apply_precision, gpu_count  # noqa: E402


def measure(arch: str, batch: int, precision: str, steps: int,
            feed: str = "uint8") -> dict[str, float]:
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    apply_precision(precision)
    size = MODELS[arch].default_image_size
    model = build_model(arch, input_shape=(*size, 3), num_classes=2, weights="none")
    model.compile(optimizer=build_optimizer("SGD", 0.01), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(batch * steps, *size, 3), dtype=np.uint8)
    y = rng.integers(0, 2, size=batch * steps)
    dtype = np.dtype(feed).type
    data = ArrayBatches(x, y, batch_size=batch, shuffle=True, seed=0, workers=4, dtype=dtype)
    warm = ArrayBatches(x[: batch * 3], y[: batch * 3], batch_size=batch, shuffle=False,
                        dtype=dtype)
    model.fit(warm, epochs=1, verbose=0)  # compiles the train step
    start = time.perf_counter()
    model.fit(data, epochs=1, verbose=0)
    seconds = time.perf_counter() - start
    images = batch * steps
    flops = training_flops_per_image(model)
    return {"arch": arch, "batch_size": batch, "precision": precision, "feed": feed,
            "images_per_s": images / seconds, "seconds": seconds,
            "train_gflop_per_image": flops / 1e9,
            "achieved_tflops": flops * images / seconds / 1e12}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default="alexnet,inception_v3")
    parser.add_argument("--batch-sizes", default="32,64,128,256")
    parser.add_argument("--precisions", default="float32,mixed_float16,mixed_bfloat16")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--feeds", default="uint8",
                        help="dtypes batches are fed as: uint8 (hpo's default), float32")
    parser.add_argument("--peak-tflops-mixed", type=float, default=989.0)
    parser.add_argument("--peak-tflops-float32", type=float, default=494.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows = []
    for arch in args.archs.split(","):
        for batch in map(int, args.batch_sizes.split(",")):
            for precision, feed in [(p, f) for p in args.precisions.split(",")
                                    for f in args.feeds.split(",")]:
                row = measure(arch, batch, precision, args.steps, feed)
                peak = args.peak_tflops_float32 if precision == "float32" \
                    else args.peak_tflops_mixed
                row["mfu"] = row["achieved_tflops"] / peak
                rows.append(row)
                print(f"{arch:13s} batch {batch:4d} {precision:15s} feed {feed:7s} "
                      f"{row['images_per_s']:9.1f} img/s  {row['achieved_tflops']:7.1f} TFLOP/s"
                      f"  MFU {row['mfu']:.1%}", flush=True)
    result = {"backend": keras.backend.backend(), "gpus": gpu_count(),
              "device": os.environ.get("HPO_BENCH_DEVICE", ""), "rows": rows}
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
