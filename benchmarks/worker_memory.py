"""A worker's memory over many trials, per Keras backend, with and without recycling.

Runs ``hpo worker`` as a user would (the demo model, 1 epoch per trial, a random sampler
over the demo space, figures and kept models off) for ``--trials`` trials, once per
(backend, ``--recycle-after``) pair, back to back on a warm image cache, and samples the
worker's resident memory (``/proc/PID/status``; the PID survives the worker's recycling)
each time a trial finishes. Reports the RSS after trials 5 and N, the growth per trial
(least squares over trials 5..N) and the wall time.

    python benchmarks/worker_memory.py --trials 50 --backends tensorflow,jax \\
        --recycle 0,20 --out benchmarks/results/worker_memory_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEMO = Path(__file__).resolve().parents[1] / "hpo" / "studies" / "demo.toml"


def rss_mib(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except FileNotFoundError:
        return None
    return None


def finished_trials(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=1) as conn:
            return conn.execute("SELECT count(*) FROM trials WHERE state IN "
                                "('COMPLETE', 'PRUNED', 'FAIL')").fetchone()[0]
    except sqlite3.OperationalError:  # the schema is not there yet, or the file is busy
        return 0


def slope(points: list[tuple[int, float]]) -> float:
    n = len(points)
    if n < 2:
        return float("nan")
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    den = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / den


def run(backend: str, recycle: int, trials: int, folder: Path, study: Path) -> dict:
    db = folder / f"{backend}-{recycle}.db"
    env = {**os.environ, "KERAS_BACKEND": backend, "HPO_STORAGE": f"sqlite:///{db}"}
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "hpo", "worker", "--study", str(study), "--sampler", "random",
         "--n-trials", str(trials), "--recycle-after", str(recycle), "--no-figures",
         "--keep-models", "0", "--quiet"], cwd=folder, env=env)
    samples: dict[int, float] = {}
    seen = 0
    while proc.poll() is None:
        done = finished_trials(db)
        if done > seen:
            memory = rss_mib(proc.pid)
            if memory:  # None: gone; 0: caught in the middle of its own exec (recycling)
                samples[done] = memory
            seen = done
        time.sleep(0.1)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"worker ({backend}, recycle {recycle}) exited {proc.returncode}")
    return summarize({"backend": backend, "recycle_after": recycle,
                      "trials": finished_trials(db), "wall_s": round(seconds, 1),
                      "rss_mib": {str(n): round(m, 1) for n, m in sorted(samples.items())}})


def summarize(row: dict) -> dict:
    """Adds RSS after trial 5 and after the last, the peak, and the growth per trial (least
    squares over trials 5..N; a recycled worker's saw-tooth makes that near 0)."""
    points = sorted((int(n), m) for n, m in row["rss_mib"].items() if int(n) >= 5 and m > 0)
    return {**row,
            "rss_after_5": round(points[0][1], 1) if points else None,
            "rss_after_last": round(points[-1][1], 1) if points else None,
            "rss_peak": round(max(m for _, m in points), 1) if points else None,
            "growth_mib_per_trial": round(slope(points), 2)}


def report(rows: list[dict]) -> None:
    for row in rows:
        base = next(r for r in rows if r["backend"] == row["backend"])
        print(f"{row['backend']:<10} recycle {row['recycle_after']:>2}: {row['trials']} "
              f"trials, RSS {row['rss_after_5']} -> {row['rss_after_last']} MiB, peak "
              f"{row['rss_peak']} ({row['growth_mib_per_trial']:+.2f} MiB/trial), "
              f"{row['wall_s']} s ({row['wall_s'] / base['wall_s']:.2f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--backends", default="tensorflow,jax")
    parser.add_argument("--recycle", default="0,20")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--summarize", type=Path,
                        help="recompute the summary of an earlier --out from its samples")
    args = parser.parse_args()
    if args.summarize is not None:
        earlier = json.loads(args.summarize.read_text())
        earlier["rows"] = [summarize(row) for row in earlier["rows"]]
        args.summarize.write_text(json.dumps(earlier, indent=2))
        report(earlier["rows"])
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        os.environ["HPO_CACHE_DIR"] = str(folder / "cache")
        study = folder / "demo1.toml"
        study.write_text(re.sub(r"(?m)^epochs = \d+", "epochs = 1", DEMO.read_text()))
        subprocess.run([sys.executable, "-m", "hpo", "run", "--study", str(study),
                        "--n-trials", "1", "--storage", f"sqlite:///{folder / 'warm.db'}",
                        "--quiet", "--no-figures"], check=True, cwd=folder)  # decode once
        rows = [run(b, int(r), args.trials, folder, study)
                for b in args.backends.split(",") for r in args.recycle.split(",")]
    report(rows)
    if args.out:
        args.out.write_text(json.dumps({
            "machine": f"{platform.machine()}, {os.cpu_count()} cores", "rows": rows},
            indent=2))


if __name__ == "__main__":
    main()
