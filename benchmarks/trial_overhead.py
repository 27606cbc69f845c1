"""Per-trial overhead and memory over many trials in one worker.

Runs ``--trials`` short trials (the demo grid's model, 1 epoch, a random sampler over its
space) in this process and records for each: the time from trial start to the first
training step (model build, compile, storage round trips), the training time, the time from
the end of training to the next trial's start, and the process RSS after the trial. RSS must
stay flat: no memory kept across trials.

    python benchmarks/trial_overhead.py --trials 50 --out results/trial_overhead_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import optuna  # noqa: E402

import hpo  # noqa: E402
from hpo.config import RunSettings  # noqa: E402
from hpo.execution import run_study  # noqa: E402
from hpo.reporting import Reporter  # noqa: E402


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


@dataclass
class Recorder(Reporter):
    rows: list[dict[str, float]] = field(default_factory=list)

    def trial_done(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        attrs = trial.user_attrs
        self.rows.append({"number": trial.number, "wall_s": attrs.get("wall_time_s", 0.0),
                          "startup_s": attrs.get("startup_s", 0.0),
                          "train_s": attrs.get("train_time_s", 0.0),
                          "end": time.perf_counter(), "rss_mib": rss_mib(),
                          "start": trial.datetime_start.timestamp()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    config = hpo.load_study_config("demo")
    from dataclasses import replace

    config = replace(config, training={**config.training, "epochs": 1})
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["HPO_CACHE_DIR"] = str(Path(tmp) / "cache")
        recorder = Recorder(metric=config.metric, quiet=True)
        began = time.perf_counter()
        run_study(config, RunSettings.create(study=config.name, sampler="random",
                                             storage=f"sqlite:///{tmp}/o.db",
                                             n_trials=args.trials), recorder)
        total = time.perf_counter() - began
    rows = recorder.rows
    gaps = [b["start"] - (a["start"] + a["wall_s"]) for a, b in zip(rows, rows[1:])]
    summary = {
        "trials": len(rows), "total_s": total,
        "median_wall_s": statistics.median(r["wall_s"] for r in rows),
        "median_startup_s": statistics.median(r["startup_s"] for r in rows),
        "median_train_s": statistics.median(r["train_s"] for r in rows),
        "median_between_trials_s": statistics.median(gaps) if gaps else 0.0,
        "rss_mib_after_trial_5": rows[min(4, len(rows) - 1)]["rss_mib"],
        "rss_mib_after_last": rows[-1]["rss_mib"],
    }
    summary["startup_share"] = summary["median_startup_s"] / summary["median_wall_s"]
    for key, value in summary.items():
        print(f"{key:28s} {value:.3f}" if isinstance(value, float) else f"{key:28s} {value}")
    if args.out:
        args.out.write_text(json.dumps({"machine": f"{platform.machine()}, {os.cpu_count()} "
                                        "cores", "summary": summary, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
