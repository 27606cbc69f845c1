"""Whole-study throughput: the user's command timed end to end, not only ``fit``.

Runs ``hpo run --study demo`` (12 trials; ``--study`` to change) as a fresh process against a
fresh SQLite database, for two versions of hpo side by side in one run: ``--before`` (a git
revision, checked out into a temporary worktree) and the working tree, alternating which
goes first each round (these machines are noisy). The image cache is built before timing.
For each run it reports, from the trials the study stored:

* study wall time (process start to exit) and trials per hour;
* seconds outside ``fit`` per trial: (study wall - sum of train_time_s) / trials, which
  counts start-up, imports, building, evaluation, figures, saves and storage;
* the median in-loop overhead of a steady trial: (next trial's start - this trial's start)
  - its train_time_s, first trial excluded;
* first / steady trial ratio, and worker start (process start -> first trial start).

    python benchmarks/study_throughput.py --before 04b8c63 --rounds 2 \\
        --out benchmarks/results/study_throughput_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import optuna

ROOT = Path(__file__).resolve().parents[1]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _run_study(source: Path, study: str, cache: Path, *, n_trials: int | None = None
               ) -> dict[str, float]:
    """One ``hpo run`` of ``study`` with hpo imported from ``source``; its figures."""
    with tempfile.TemporaryDirectory() as tmp:
        storage = f"sqlite:///{tmp}/study.db"
        env = {**os.environ, "PYTHONPATH": str(source), "HPO_CACHE_DIR": str(cache),
               "TF_CPP_MIN_LOG_LEVEL": "2"}
        argv = [sys.executable, "-m", "hpo", "run", "--study", study, "--storage", storage,
                "--quiet", "--artifacts", f"{tmp}/artifacts"]
        if n_trials is not None:
            argv += ["--n-trials", str(n_trials)]
        started_at = datetime.now()
        started = time.perf_counter()
        subprocess.run(argv, cwd=tmp, env=env, check=True, capture_output=True, text=True)
        wall = time.perf_counter() - started
        loaded = optuna.load_study(study_name=optuna.get_all_study_names(storage)[0],
                                   storage=storage)
        trials = sorted(loaded.trials, key=lambda t: t.datetime_start)
    fit = [t.user_attrs.get("train_time_s", 0.0) for t in trials]
    starts = [t.datetime_start for t in trials]
    spans = [(b - a).total_seconds() for a, b in zip(starts, starts[1:])]
    steady = [span - f for span, f in zip(spans[1:], fit[1:])]
    durations = [(t.datetime_complete - t.datetime_start).total_seconds() for t in trials]
    return {
        "trials": len(trials),
        "study_wall_s": round(wall, 2),
        "trials_per_hour": round(len(trials) / wall * 3600, 1),
        "fit_s_total": round(sum(fit), 2),
        "outside_fit_s_per_trial": round((wall - sum(fit)) / len(trials), 3),
        "steady_overhead_s_median": round(statistics.median(steady), 3) if steady else None,
        "first_over_steady": round(durations[0] / statistics.median(durations[1:]), 2)
        if len(durations) > 1 else None,
        "worker_start_s": round((starts[0] - started_at).total_seconds(), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", default="04b8c63",
                        help="git revision to compare against (default: main before issue 15)")
    parser.add_argument("--study", default="demo")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        before = Path(tmp) / "before"
        subprocess.run(["git", "worktree", "add", "--detach", str(before), args.before],
                       cwd=ROOT, check=True, capture_output=True)
        cache = Path(tmp) / "cache"
        try:
            sides = {"before": before, "after": ROOT}
            for source in sides.values():  # builds the image cache, warms the disk cache
                _run_study(source, args.study, cache, n_trials=1)
            runs: dict[str, list[dict[str, float]]] = {name: [] for name in sides}
            for round_ in range(args.rounds):
                order = list(sides) if round_ % 2 == 0 else list(reversed(sides))
                for name in order:
                    result = _run_study(sides[name], args.study, cache)
                    runs[name].append(result)
                    print(name, json.dumps(result), flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(before)], cwd=ROOT,
                           check=False, capture_output=True)

    def median(name: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[name])

    summary = {
        key: {"before": round(median("before", key), 3),
              "after": round(median("after", key), 3),
              "after_over_before": round(median("after", key) / median("before", key), 3)}
        for key in ("study_wall_s", "trials_per_hour", "outside_fit_s_per_trial",
                    "steady_overhead_s_median", "first_over_steady", "worker_start_s")
    }
    report = {
        "benchmark": "study_throughput", "study": args.study, "before": args.before,
        "after": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                capture_output=True, text=True).stdout.strip() + " + tree",
        "machine": {"cpu": _cpu_model(), "cores": os.cpu_count(),
                    "python": platform.python_version(), "gpu": None},
        "rounds": args.rounds, "runs": runs, "median": summary,
    }
    print(json.dumps(summary, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
