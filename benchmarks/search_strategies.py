"""Grid vs random vs TPE vs TPE + Hyperband: trials and CPU time to come within 0.5 points
of the grid's best, over several seeds of the search itself.

Two steps:

1. Without ``--table``: trains the whole grid of ``benchmarks/studies/thesis-digits.toml``
   for real (``hpo run --sampler grid --workers 2``: 96 small CNNs on the bundled digits,
   4 epochs each) and keeps the study database.
2. Replays each search strategy, with Optuna's own samplers and pruner, against that
   table: a trial that asks for a configuration gets the validation accuracy that
   configuration reached in the real grid run, epoch by epoch (so Hyperband prunes on
   real learning curves), and costs the CPU seconds it took there (a pruned trial: its
   start-up plus the epochs it trained). This is a tabular benchmark, as HPOBench or
   NAS-Bench do it: the seeds vary the search, not the training noise, and a strategy is
   charged what the real run cost.

Target: the best validation accuracy of the grid minus 0.5 points. For each strategy and
seed: the trials (and CPU seconds) until a completed trial first reaches the target,
with at most as many trials as the grid has. The grid itself is run in hpo's grid order
(one order) and, for its expected cost, in random orders (seeds).

    python benchmarks/search_strategies.py --seeds 10 --out benchmarks/results/search_strategies_cpu.json

The output holds the grid's table too: ``--table benchmarks/results/search_strategies_cpu.json``
replays against it again (other seeds, other strategies) without training anything.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.trial import TrialState

STUDY = Path(__file__).resolve().parent / "studies" / "thesis-digits.toml"
TOLERANCE = 0.005  # 0.5 accuracy points


@dataclass(frozen=True)
class Row:
    """One configuration of the real grid run."""

    params: dict[str, Any]
    curve: list[float]  # validation accuracy after each epoch
    wall_s: float  # the whole trial: start-up, training, evaluation
    train_s: float  # model.fit alone
    grid_order: int  # when hpo's grid sampler ran it

    @property
    def value(self) -> float:
        return max(self.curve)

    def cost(self, epochs: int) -> float:
        """CPU seconds of this trial stopped after ``epochs`` epochs."""
        return self.wall_s - self.train_s + self.train_s * epochs / len(self.curve)


def run_grid(folder: Path) -> Path:
    db = folder / "grid.db"
    subprocess.run([sys.executable, "-m", "hpo", "run", "--study", str(STUDY), "--sampler",
                    "grid", "--workers", "2", "--storage", f"sqlite:///{db}", "--quiet",
                    "--no-figures", "--keep-models", "0", "--recycle-after", "0"],
                   check=True, cwd=folder)
    return db


def load_table(db: Path) -> dict[tuple, Row]:
    study = optuna.load_study(study_name="thesis-digits", storage=f"sqlite:///{db}")
    table: dict[tuple, Row] = {}
    complete = sorted(study.get_trials(states=(TrialState.COMPLETE,)),
                      key=lambda t: t.datetime_start)
    for order, trial in enumerate(complete):
        key = tuple(sorted(trial.params.items()))
        table[key] = Row(params=trial.params,
                         curve=[float(v) for v in trial.user_attrs["history"]["val_accuracy"]],
                         wall_s=float(trial.user_attrs["wall_time_s"]),
                         train_s=float(trial.user_attrs["train_time_s"]),
                         grid_order=order)
    return table


def space(table: dict[tuple, Row]) -> dict[str, list[Any]]:
    names = sorted(next(iter(table.values())).params)
    return {n: sorted({r.params[n] for r in table.values()}, key=str) for n in names}


def replay(table: dict[tuple, Row], target: float, sampler: optuna.samplers.BaseSampler,
           pruner: optuna.pruners.BasePruner | None, budget: int) -> dict[str, Any]:
    """Runs one search against the table; returns trials and cost to reach ``target``."""
    choices = space(table)
    spent = 0.0
    result: dict[str, Any] = {"trials": None, "cpu_s": None, "epochs": 0}

    def objective(trial: optuna.Trial) -> float:
        nonlocal spent
        params = {n: trial.suggest_categorical(n, values) for n, values in choices.items()}
        row = table[tuple(sorted(params.items()))]
        for epoch, value in enumerate(row.curve, start=1):
            trial.report(max(row.curve[:epoch]), epoch)
            if pruner is not None and epoch < len(row.curve) and trial.should_prune():
                spent += row.cost(epoch)
                result["epochs"] += epoch
                raise optuna.TrialPruned()
        spent += row.cost(len(row.curve))
        result["epochs"] += len(row.curve)
        return row.value

    def stop_at_target(study: optuna.Study, frozen: optuna.trial.FrozenTrial) -> None:
        if frozen.state == TrialState.COMPLETE and frozen.value >= target:
            result["trials"] = frozen.number + 1
            result["cpu_s"] = round(spent, 1)
            study.stop()

    study = optuna.create_study(direction="maximize", sampler=sampler,
                                pruner=pruner or optuna.pruners.NopPruner())
    study.optimize(objective, n_trials=budget, callbacks=[stop_at_target])
    return result


def replay_order(table: dict[tuple, Row], order: list[Row], target: float) -> dict[str, Any]:
    spent = 0.0
    for number, row in enumerate(order, start=1):
        spent += row.cost(len(row.curve))
        if row.value >= target:
            return {"trials": number, "cpu_s": round(spent, 1),
                    "epochs": number * len(row.curve)}
    return {"trials": None, "cpu_s": None, "epochs": len(order) * len(order[0].curve)}


def summarize(runs: list[dict[str, Any]], budget: int) -> dict[str, Any]:
    reached = [r for r in runs if r["trials"] is not None]
    out: dict[str, Any] = {"seeds": len(runs), "reached": len(reached)}
    if reached:
        out["median_trials"] = statistics.median(r["trials"] for r in reached)
        out["mean_trials"] = round(statistics.mean(r["trials"] for r in reached), 1)
        out["median_cpu_s"] = round(statistics.median(r["cpu_s"] for r in reached), 1)
        out["mean_cpu_s"] = round(statistics.mean(r["cpu_s"] for r in reached), 1)
        out["max_trials"] = max(r["trials"] for r in reached)
    out["budget"] = budget
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--table", type=Path,
                        help="an earlier output of this script: replay against its grid")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    if args.table is not None:
        table = {tuple(sorted(r["params"].items())): Row(**r)
                 for r in json.loads(args.table.read_text())["table"]}
    else:
        with tempfile.TemporaryDirectory() as tmp:
            os.environ.setdefault("HPO_CACHE_DIR", str(Path(tmp) / "cache"))
            table = load_table(run_grid(Path(tmp)))
    rows = list(table.values())
    budget = len(rows)
    best = max(r.value for r in rows)
    target = best - TOLERANCE
    full_grid_cpu_s = sum(r.cost(len(r.curve)) for r in rows)
    in_grid_order = sorted(rows, key=lambda r: r.grid_order)
    strategies: dict[str, Callable[[int], dict[str, Any]]] = {
        "random orders of the grid": lambda s: replay_order(
            table, random.Random(s).sample(rows, len(rows)), target),
        "random sampling": lambda s: replay(
            table, target, optuna.samplers.RandomSampler(seed=s), None, budget),
        "TPE (multivariate)": lambda s: replay(
            table, target, optuna.samplers.TPESampler(seed=s, multivariate=True, group=True),
            None, budget),
        "TPE + Hyperband": lambda s: replay(
            table, target, optuna.samplers.TPESampler(seed=s, multivariate=True, group=True),
            optuna.pruners.HyperbandPruner(min_resource=1, max_resource=len(rows[0].curve),
                                           reduction_factor=3), budget),
    }
    results: dict[str, Any] = {
        "grid (hpo's order)": {**replay_order(table, in_grid_order, target), "seeds": 1}}
    runs_by_strategy = {}
    for name, strategy in strategies.items():
        runs = [strategy(seed) for seed in range(args.seeds)]
        runs_by_strategy[name] = runs
        results[name] = summarize(runs, budget)
    print(f"grid: {budget} configurations, best val_accuracy {best:.4f}, target {target:.4f}, "
          f"full grid {full_grid_cpu_s:.0f} CPU-s")
    for name, summary in results.items():
        print(f"  {name:<28} {json.dumps(summary)}")
    if args.out:
        args.out.write_text(json.dumps({
            "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "grid_size": budget, "grid_best": best, "target": target,
            "full_grid_cpu_s": round(full_grid_cpu_s, 1),
            "top_configurations": [
                {"params": r.params, "val_accuracy": r.value}
                for r in sorted(rows, key=lambda r: -r.value)[:5]],
            "results": results, "runs": runs_by_strategy,
            "table": [vars(r) for r in sorted(rows, key=lambda r: r.grid_order)]},
            indent=2, default=str))


if __name__ == "__main__":
    main()
