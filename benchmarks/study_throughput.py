"""Whole-study throughput: the user's command timed end to end, not only ``fit``.

Runs ``hpo run --study demo`` (12 trials; ``--study`` to change) as a fresh process against a
fresh SQLite database, for two versions of hpo side by side in one run: ``--before`` (a git
revision, checked out into a temporary worktree, or ``--before-tree``, a folder holding an
exported copy of it where there is no git history, as on a lent GPU machine) and the working
tree, alternating which goes first each round (these machines are noisy). With
``--packed K`` a third side runs the working tree with ``--gpus 0 --trials-per-gpu K``: K
workers sharing the GPU. The image cache is built before timing (``--warm`` names the sides
whose first trial is run once untimed: the image cache, and hpo's compile cache where the
side has one). For each run it reports, from the trials the study stored:

* study wall time (process start to exit) and trials per hour;
* seconds outside ``fit`` per trial: (study wall - sum of train_time_s) / trials, which
  counts start-up, imports, building, evaluation, figures, saves and storage (left out
  for packed workers, whose fits overlap);
* the median in-loop overhead of a steady trial: (next trial's start - this trial's start)
  - its train_time_s, first trial excluded (one worker only);
* first / steady trial ratio, and worker start (process start -> first trial start);
* on an NVIDIA GPU, the GPU's busy % over the whole study (NVIDIA's utilization counter,
  sampled every 0.2 s through NVML from process start to exit), and the mean of the busy %
  each trial recorded while its ``fit`` ran (where the side records it).

    python benchmarks/study_throughput.py --before 04b8c63 --rounds 2 \\
        --out benchmarks/results/study_throughput_cpu.json
    KERAS_BACKEND=jax python benchmarks/study_throughput.py \\
        --study benchmarks/studies/alexnet-gpu.toml --before-tree /tmp/before --rounds 1 \\
        --packed 4 --warm after --order after,packed,before \\
        --out benchmarks/results/study_throughput_alexnet_gpu.json
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
from datetime import datetime
from pathlib import Path

from typing import Callable

import optuna

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from hpo.trial._gpu import GpuMonitor, utilization_reader  # noqa: E402
_SAMPLE_S = 0.2


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _gpu_name() -> str | None:
    """The name of GPU 0, or None without one (or without nvidia-ml-py)."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(0))
    except pynvml.NVMLError:
        return None
    return name.decode() if isinstance(name, bytes) else name


def _run_study(source: Path, study: str, cache: Path, *, n_trials: int | None = None,
               extra: tuple[str, ...] = (), gpu: Callable[[], float] | None = None
               ) -> dict[str, float]:
    """One ``hpo run`` of ``study`` with hpo imported from ``source``; its figures."""
    with tempfile.TemporaryDirectory() as tmp:
        storage = f"sqlite:///{tmp}/study.db"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
                   [str(source), *filter(None, [os.environ.get("PYTHONPATH")])]),
               "HPO_CACHE_DIR": str(cache), "TF_CPP_MIN_LOG_LEVEL": "2"}
        argv = [sys.executable, "-m", "hpo", "run", "--study", study, "--storage", storage,
                "--quiet", "--artifacts", f"{tmp}/artifacts", *extra]
        if n_trials is not None:
            argv += ["--n-trials", str(n_trials)]
        started_at = datetime.now()
        started = time.perf_counter()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        with GpuMonitor(gpu, interval=_SAMPLE_S) as busy:  # hpo's own sampler of a trial
            done = subprocess.run(argv, cwd=tmp, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if done.returncode != 0:
            raise RuntimeError(f"hpo run failed (exit {done.returncode}) from {source}:\n"
                               f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        loaded = optuna.load_study(study_name=optuna.get_all_study_names(storage)[0],
                                   storage=storage)
        trials = sorted(loaded.trials, key=lambda t: t.datetime_start)
    fit = [t.user_attrs.get("train_time_s", 0.0) for t in trials]
    starts = [t.datetime_start for t in trials]
    spans = [(b - a).total_seconds() for a, b in zip(starts, starts[1:])]
    steady = [span - f for span, f in zip(spans[1:], fit[1:])]
    durations = [(t.datetime_complete - t.datetime_start).total_seconds() for t in trials]
    fit_busy = [t.user_attrs["gpu_busy_pct"] for t in trials if "gpu_busy_pct" in t.user_attrs]
    workers = len({t.user_attrs.get("worker", {}).get("name") for t in trials
                   if isinstance(t.user_attrs.get("worker"), dict)}) or 1
    result = {
        "trials": len(trials),
        "workers": workers,
        "study_wall_s": round(wall, 2),
        # the hpo process's CPU (and its workers'), user and kernel, and its page faults
        "cpu_user_s": round(after.ru_utime - before.ru_utime, 2),
        "cpu_sys_s": round(after.ru_stime - before.ru_stime, 2),
        "minor_page_faults": after.ru_minflt - before.ru_minflt,
        "trials_per_hour": round(len(trials) / wall * 3600, 1),
        "fit_s_total": round(sum(fit), 2),
        "outside_fit_s_per_trial": round((wall - sum(fit)) / len(trials), 3),
        "steady_overhead_s_median": round(statistics.median(steady), 3) if steady else None,
        "first_over_steady": round(durations[0] / statistics.median(durations[1:]), 2)
        if len(durations) > 1 else None,
        "worker_start_s": round((starts[0] - started_at).total_seconds(), 2),
        "first_trial_s": round(durations[0], 2),
        "steady_trial_s_median": round(statistics.median(durations[1:]), 2)
        if len(durations) > 1 else None,
        "gpu_busy_pct_study": busy.facts().get("gpu_busy_pct"),
        "gpu_busy_pct_fit_mean": round(statistics.fmean(fit_busy), 1) if fit_busy else None,
    }
    # Compile seconds (JAX) of trials whose worker had compiled their steps before (the
    # steps reused) and of the others; first and later epochs' wall times.
    # "Compiled before": the steps kept from an earlier trial and trained at this batch size
    # before (``steps_traced``); a tree older than that attribute says only ``steps_reused``.
    compiled = [(t.user_attrs["compile_s"],
                 t.user_attrs.get("steps_traced", t.user_attrs.get("steps_reused", False)))
                for t in trials if "compile_s" in t.user_attrs]
    first_of_shape = [c for c, reused in compiled if not reused]
    on_reused = [c for c, reused in compiled if reused]
    epochs = [t.user_attrs["epoch_times_s"] for t in trials if t.user_attrs.get("epoch_times_s")]
    result.update({
        "trials_compiled_before": len(on_reused) if compiled else None,
        "compile_s_first_of_shape_median": round(statistics.median(first_of_shape), 3)
        if first_of_shape else None,
        "compile_s_reused_median": round(statistics.median(on_reused), 3)
        if on_reused else None,
        "first_epoch_s_median": round(statistics.median(e[0] for e in epochs), 3)
        if epochs else None,
        "later_epoch_s_median": round(statistics.median(x for e in epochs for x in e[1:]), 3)
        if any(len(e) > 1 for e in epochs) else None,
    })
    if workers > 1:  # several fits overlap: per-trial and in-loop figures don't apply
        for key in ("outside_fit_s_per_trial", "steady_overhead_s_median",
                    "first_over_steady"):
            result[key] = None
    return result


def _export(revision: str, into: Path) -> None:
    """``revision``'s tracked files into ``into`` (a git worktree)."""
    subprocess.run(["git", "worktree", "add", "--detach", str(into), revision],
                   cwd=ROOT, check=True, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", default="04b8c63",
                        help="git revision to compare against (default: main before issue 15)")
    parser.add_argument("--before-tree", type=Path,
                        help="a folder holding an exported copy of --before (no git needed)")
    parser.add_argument("--study", default="demo")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--packed", type=int, default=0, metavar="K",
                        help="also run this tree with --gpus 0 --trials-per-gpu K")
    parser.add_argument("--order", default="before,after,packed",
                        help="the sides in the first round's order (later rounds alternate)")
    parser.add_argument("--warm", default="before,after",
                        help="sides run once, untimed, before timing (the image cache, and "
                             "the compile cache of a side that has one)")
    parser.add_argument("--warm-trials", type=int, default=1,
                        help="trials of that untimed run (0: the whole study, so that no "
                             "timed run compiles a program the other did not)")
    parser.add_argument("--extra", default="",
                        help="more hpo run arguments for every side, e.g. "
                             "'--sampler tpe --pruner hyperband --n-trials 16'")
    parser.add_argument("--after-extra", default="",
                        help="more hpo run arguments for the working tree's sides only, e.g. "
                             "'--steps-per-execution 8' against --before-tree of this tree")
    parser.add_argument("--cache", type=Path,
                        help="image and compile cache folder, kept after the run (default: a "
                             "temporary one), so that a later run can find it warm")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if Path(args.study).is_file():  # a study file: the runs start in a temporary folder
        args.study = str(Path(args.study).resolve())
    gpu_name, gpu = _gpu_name(), utilization_reader()
    report = {
        "benchmark": "study_throughput",
        "study": Path(args.study).name if Path(args.study).is_file() else args.study, "before": args.before,
        # HPO_BENCH_REVISION: where the tree is a copy whose .git is not its own history
        "after": os.environ.get("HPO_BENCH_REVISION") or subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
            text=True).stdout.strip() + " + tree",
        "machine": {"cpu": _cpu_model(), "cores": os.cpu_count(),
                    "python": platform.python_version(), "gpu": gpu_name,
                    "keras_backend": os.environ.get("KERAS_BACKEND", "tensorflow")},
        "rounds": args.rounds, "packed_per_gpu": args.packed or None,
        "extra": args.extra or None, "after_extra": args.after_extra or None,
        "warm": args.warm, "warm_trials": args.warm_trials or "study",
    }

    def save(runs: dict, summary: dict | None = None) -> None:
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps({**report, "runs": runs, "median": summary},
                                           indent=2) + "\n")

    with tempfile.TemporaryDirectory() as tmp:
        before = args.before_tree.resolve() if args.before_tree else Path(tmp) / "before"
        order = [s for s in args.order.split(",") if s != "packed" or args.packed]
        if args.before_tree is None and "before" in order:
            _export(args.before, before)
        cache = args.cache.resolve() if args.cache else Path(tmp) / "cache"
        common = tuple(args.extra.split())
        mine = (*common, *args.after_extra.split())
        sides = {"before": (before, common), "after": (ROOT, mine),
                 "packed": (ROOT, (*mine, "--gpus", "0", "--trials-per-gpu",
                                   str(args.packed)))}
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in order}
        try:
            for name in order:  # builds the image cache, warms the disk and compile caches
                if name in args.warm.split(","):
                    source, extra = sides[name]
                    _run_study(source, args.study, cache, n_trials=args.warm_trials or None,
                               extra=extra)
                    print("warmed", name, flush=True)
            for round_ in range(args.rounds):
                for name in order if round_ % 2 == 0 else list(reversed(order)):
                    source, extra = sides[name]
                    try:
                        result = _run_study(source, args.study, cache, extra=extra, gpu=gpu)
                    except RuntimeError as exc:  # the other sides still run
                        print(name, exc, file=sys.stderr, flush=True)
                        continue
                    runs[name].append(result)
                    print(name, json.dumps(result), flush=True)
                    save(runs)
        finally:
            if args.before_tree is None and "before" in order:
                subprocess.run(["git", "worktree", "remove", "--force", str(before)],
                               cwd=ROOT, check=False, capture_output=True)

    def median(name: str, key: str) -> float | None:
        values = [r[key] for r in runs[name] if r[key] is not None]
        return round(statistics.median(values), 3) if values else None

    keys = ("study_wall_s", "trials_per_hour", "outside_fit_s_per_trial",
            "steady_overhead_s_median", "first_over_steady", "worker_start_s",
            "gpu_busy_pct_study", "gpu_busy_pct_fit_mean", "compile_s_first_of_shape_median",
            "compile_s_reused_median", "first_epoch_s_median", "later_epoch_s_median")
    summary = {key: {name: median(name, key) for name in order} for key in keys}
    if "before" in order:
        for key, row in summary.items():
            for name in order:
                if name != "before" and row[name] is not None and row["before"]:
                    row[f"{name}_over_before"] = round(row[name] / row["before"], 3)
    print(json.dumps(summary, indent=2))
    save(runs, summary)


if __name__ == "__main__":
    main()
