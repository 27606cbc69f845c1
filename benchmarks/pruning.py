"""Pruning savings: the demo grid (epochs raised) with no pruner, MedianPruner and
successive halving, side by side: epochs trained, wall time, and the best configuration.

    python benchmarks/pruning.py --epochs 8 --out results/pruning_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import hpo  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--pruners", default="none,median,successive_halving")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    base = hpo.load_study_config("demo")
    config = replace(base, training={**base.training, "epochs": args.epochs})
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["HPO_CACHE_DIR"] = str(Path(tmp) / "cache")
        for pruner in args.pruners.split(","):
            start = time.perf_counter()
            study = hpo.run(config, storage=f"sqlite:///{tmp}/{pruner}.db", pruner=pruner)
            seconds = time.perf_counter() - start
            trials = study.trials
            rows.append({
                "pruner": pruner, "wall_s": seconds, "trials": len(trials),
                "pruned": sum(t.state.name == "PRUNED" for t in trials),
                "epochs_trained": sum(t.user_attrs.get("epochs_trained", 0) for t in trials),
                "best_value": study.best_value, "best_params": study.best_params})
    for row in rows:
        print(f"{row['pruner']:20s} {row['wall_s']:7.1f}s  {row['epochs_trained']:4d} epochs "
              f"({row['pruned']} pruned)  best {row['best_value']:.4f} {row['best_params']}")
    if args.out:
        args.out.write_text(json.dumps({"machine": f"{platform.machine()}, {os.cpu_count()} "
                                        "cores", "epochs": args.epochs, "rows": rows},
                                       indent=2))


if __name__ == "__main__":
    main()
