"""What a new process costs before its first trial, per ml_dtypes release, side by side.

Every hpo process that trains imports Keras, and Keras imports ml_dtypes (through JAX,
TensorFlow or itself). ml_dtypes 0.7.0 registers its NumPy ufunc loops about five times
slower than 0.6.0 (``PyUFunc_AddLoop``: 58 % of the samples of ``py-spy record --native``
over ``import ml_dtypes``). This script installs each release given in ``--versions`` into a
folder of its own (``pip install --no-deps --target``; the rest of the environment is the
one this script runs in), puts that folder first on ``PYTHONPATH``, and times, in fresh
processes, alternating which release goes first each round:

* ``import ml_dtypes`` and ``import keras`` (per backend in ``--backends``): CPU seconds
  (user + kernel, ``RUSAGE_CHILDREN``) and wall;
* a whole study: ``hpo run --study demo --n-trials N --isolate`` (each trial in a fresh
  worker process, so N process starts) against a fresh SQLite database, after the same
  study ran once untimed (the image cache, and JAX's compile cache, which hpo shares
  between processes, hold what every side will load).

    python benchmarks/worker_start.py --versions 0.6.0,0.7.0 --rounds 2 \\
        --out benchmarks/results/worker_start_ml_dtypes_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from study_throughput import _cpu_model  # benchmarks/ is first on sys.path


def _timed(argv: list[str], env: dict[str, str], cwd: Path) -> dict[str, float]:
    """Runs ``argv`` to the end; its wall time and the CPU seconds of it and its children."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(argv, env=env, cwd=cwd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"wall_s": round(wall, 2),
            "cpu_s": round(after.ru_utime - before.ru_utime
                           + after.ru_stime - before.ru_stime, 2)}


def _install(version: str, folder: Path) -> Path:
    target = folder / f"ml_dtypes-{version}"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--target", str(target), f"ml_dtypes=={version}"], check=True)
    return target


def _environment(target: Path, backend: str, cache: Path) -> dict[str, str]:
    path = os.pathsep.join([str(target), *filter(None, [os.environ.get("PYTHONPATH")])])
    return {**os.environ, "PYTHONPATH": path, "KERAS_BACKEND": backend,
            "HPO_CACHE_DIR": str(cache), "TF_CPP_MIN_LOG_LEVEL": "2"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", default="0.6.0,0.7.0")
    parser.add_argument("--backends", default="tensorflow,jax")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--n-trials", type=int, default=4)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    versions = args.versions.split(",")
    backends = args.backends.split(",")
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        targets = {v: _install(v, work) for v in versions}
        for v, target in targets.items():  # the release that really loads, not another one
            env = _environment(target, backends[0], work / "cache")
            found = subprocess.run([sys.executable, "-c", "import ml_dtypes; "
                                    "print(ml_dtypes.__version__)"], env=env, check=True,
                                   capture_output=True, text=True).stdout.strip()
            assert found == v, f"PYTHONPATH loads ml_dtypes {found}, not {v}"
        for backend in backends:  # the image cache, JAX's compile cache, the disk: untimed
            env = _environment(targets[versions[0]], backend, work / "cache")
            subprocess.run([sys.executable, "-m", "hpo", "run", "--study", "demo",
                            "--isolate", "--n-trials", str(args.n_trials), "--quiet",
                            "--storage", f"sqlite:///{work / f'warm-{backend}.db'}"],
                           env=env, cwd=work, check=True)
        for round_ in range(1, args.rounds + 1):
            order = versions if round_ % 2 else versions[::-1]
            for backend in backends:
                for v in order:
                    env = _environment(targets[v], backend, work / "cache")
                    for what, argv in [
                            ("import ml_dtypes", [sys.executable, "-c", "import ml_dtypes"]),
                            ("import keras", [sys.executable, "-c", "import keras"]),
                            (f"hpo run --isolate, {args.n_trials} trials",
                             [sys.executable, "-m", "hpo", "run", "--study", "demo",
                              "--isolate", "--n-trials", str(args.n_trials), "--quiet",
                              "--storage", f"sqlite:///{work / f'{v}-{backend}-{round_}.db'}"])]:
                        result = {"round": round_, "backend": backend, "ml_dtypes": v,
                                  "what": what, **_timed(argv, env, work)}
                        runs.append(result)
                        print(json.dumps(result), flush=True)
    summary = {}
    for backend in backends:
        for what in sorted({r["what"] for r in runs}):
            medians = {v: {k: statistics.median(r[k] for r in runs
                                                if r["ml_dtypes"] == v and r["what"] == what
                                                and r["backend"] == backend)
                           for k in ("cpu_s", "wall_s")} for v in versions}
            summary[f"{backend}: {what}"] = medians
            print(backend, what, json.dumps(medians))
    if args.out:
        args.out.write_text(json.dumps({
            "machine": {"cpu": _cpu_model(),
                        "cores": os.cpu_count(), "python": platform.python_version()},
            "runs": runs, "medians": summary}, indent=1) + "\n")


if __name__ == "__main__":
    main()
