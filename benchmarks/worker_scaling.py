"""Study-level throughput: the full demo grid with 1 worker, then with 2, side by side.

Each run uses a fresh SQLite study and a warm image cache; the wall time is that of
``hpo run --study demo --workers N --quiet`` as a user types it.

    python benchmarks/worker_scaling.py --workers 1,2 --out results/worker_scaling.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna


def run(workers: int, folder: Path, study: str) -> dict[str, float]:
    db = folder / f"w{workers}.db"
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "hpo", "run", "--study", study, "--workers",
                    str(workers), "--storage", f"sqlite:///{db}", "--quiet"], check=True,
                   cwd=folder)
    seconds = time.perf_counter() - start
    trials = optuna.load_study(study_name=study, storage=f"sqlite:///{db}").trials
    return {"workers": workers, "trials": len(trials), "wall_s": seconds,
            "trials_per_hour": len(trials) / seconds * 3600}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--study", default="demo")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        os.environ["HPO_CACHE_DIR"] = str(folder / "cache")
        subprocess.run([sys.executable, "-m", "hpo", "run", "--study", args.study, "--n-trials",
                        "1", "--storage", f"sqlite:///{folder / 'warm.db'}", "--quiet"],
                       check=True, cwd=folder)  # decodes the cache once
        rows = [run(int(w), folder, args.study) for w in args.workers.split(",")]
    for row in rows:
        print(f"{row['workers']} worker(s): {row['trials']} trials in {row['wall_s']:.1f}s = "
              f"{row['trials_per_hour']:.0f} trials/hour "
              f"({row['trials_per_hour'] / rows[0]['trials_per_hour']:.2f}x)")
    if args.out:
        args.out.write_text(json.dumps({
            "machine": f"{platform.machine()}, {os.cpu_count()} cores", "study": args.study,
            "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
