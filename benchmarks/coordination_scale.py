"""Per-trial coordination on huge studies: everything hpo does around a trial but training.

For each storage (SQLite file; PostgreSQL when ``--postgres URL`` or
``HPO_TEST_POSTGRES_URL`` is set) and each study size N, a synthetic study of N finished
trials is written (grid trials carry GridSampler's own ``grid_id`` / ``search_space``
attributes and ~20 user attributes, as hpo's trials do), then:

* **hpo**: ``M`` trials through hpo's own worker loop (``hpo.execution._loop.run_trials``: study lock,
  reaping, grid claim, ask, the trial's records in three writes, tell) with an
  objective that trains nothing;
* **stock**: ``M`` trials of stock Optuna's ask/tell on the same storage, with the same
  records set one by one (``GridSampler`` for the grid, the same sampler otherwise);
* **worker start**: a fresh storage and study, up to its first trial's start;
* **before** (``--before REV``): hpo's side again, on its own copy of the same study, with
  the package of an earlier revision (exported into a git worktree, or ``--before-tree``),
  in a child process running this same script: the two revisions side by side in one run.

It reports milliseconds per trial (median of the ``M``) and start seconds, as JSON, with the
machine named::

    python benchmarks/coordination_scale.py --sizes 0 1000 10000 \\
        --out benchmarks/results/coordination_scale_cpu.json
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

from hpo.config import load_study_config
from hpo.config import SearchSettings
from hpo.execution._loop import grid_claims, run_trials
from hpo.reporting import Reporter
from hpo.search import WorkerGridSampler, grid_search_space, make_sampler
from hpo.storage import (
    StorageOptions,
    close_storage,
    open_storage,
    storage_of,
    study_id,
    unwrap_storage,
)
from hpo.study import open_study
from study_throughput import ROOT, _cpu_model, _export  # benchmarks/ is first on sys.path

STUDY = """
name = "{name}"
metric = "val_accuracy"
seed = 0
pruner = "none"

[data]
source = "bundled:digits"
channels = 1

[training]
architecture = "small_cnn"
optimizer = "Adam"
learning_rate = 0.001
batch_size = 32
epochs = 1

[grid]
optimizer = ["Adam", "SGD", "RMSprop", "Nadam", "Adamax", "Adagrad", "Adadelta", "Ftrl"]
learning_rate = [{rates}]
batch_size = [{batches}]

[space.optimizer]
choices = ["Adam", "SGD", "RMSprop", "Nadam"]

[space.learning_rate]
low = 1e-5
high = 1e-1
log = true

[space.batch_size]
choices = [16, 32, 64, 128]
"""

_ATTRS = {"test_accuracy": 0.9, "tp": 10, "tn": 12, "roc_auc": 0.95, "epochs_trained": 3,
          "best_epoch": 2, "n_params": 12345, "wall_time_s": 3.2, "train_time_s": 2.9,
          "outside_fit_s": 0.3, "images_per_s": 1100.0, "seed": 0, "precision": "float32",
          "backend": "tensorflow", "sampler": "grid", "model_reused": True, "build_s": 0.02,
          "history": {"loss": [1.0, 0.5, 0.4], "val_accuracy": [0.5, 0.8, 0.9]},
          "confusion_matrix": [[10, 2], [1, 12]], "classes": ["a", "b"], "test_size": 25}


def _suggest(trial: optuna.Trial) -> None:
    """The parameters both sides sample (a grid trial comes with its own)."""
    trial.suggest_categorical("optimizer", ["Adam", "SGD", "RMSprop", "Nadam"])
    trial.suggest_float("learning_rate", 1e-5, 1e-1, log=True)
    trial.suggest_categorical("batch_size", [16, 32, 64, 128])


class _Instant:
    """An objective that trains nothing but samples the parameters (random and TPE) and
    records what a real trial records, in the same three writes (hpo's ``Objective``
    interface as the loop uses it; the last one held for the trial's end, as the
    ``Objective`` does where the revision measured can)."""

    class _NoArtifacts:
        def prune_models(self, study: optuna.Study) -> None:
            """Keeps no model (a real run's artifacts setting may: not measured here)."""

    def __init__(self, sample: bool) -> None:
        self._sample = sample
        self.artifacts = self._NoArtifacts()

    def compiled_for(self, params: dict[str, Any]) -> bool:
        """No grid point has steps compiled (nothing is trained): the grid's own order."""
        return False

    def __call__(self, trial: optuna.Trial, recorder: Any = None) -> float:
        from hpo.storage import set_user_attrs, trial_id

        if self._sample:
            _suggest(trial)
        items = list(_ATTRS.items())
        set_user_attrs(trial.storage, trial_id(trial), dict(items[:5]))
        set_user_attrs(trial.storage, trial_id(trial), dict(items[5:15]))
        # the last records go with the trial's end where hpo's revision does so
        with_end = "with_end" in inspect.signature(set_user_attrs).parameters
        set_user_attrs(trial.storage, trial_id(trial), dict(items[15:]),
                       **({"with_end": True} if with_end else {}))
        return 0.5


#: Trials written through Optuna's API; beyond that the study is grown by copying them in SQL.
_WRITTEN = 250


def _grow(url: str, target: int) -> None:
    """Grows the one study at ``url`` to ``target`` trials by copying its first trials, with
    every row that hangs off them (parameters, values, attributes), in SQL: writing 100,000
    trials through Optuna's API would take about an hour here. The copies repeat the
    originals' parameters and attributes under new ids and numbers."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    tables = sqlalchemy.MetaData()
    tables.reflect(engine)
    children = [t for name, t in tables.tables.items()
                if name != "trials" and "trial_id" in t.c and name != "trial_heartbeats"]
    with engine.begin() as conn:
        have = conn.execute(sqlalchemy.text("SELECT count(*) FROM trials")).scalar()
        while have < target:
            step = min(have, target - have)
            shift = conn.execute(sqlalchemy.text("SELECT max(trial_id) FROM trials")).scalar()
            conn.execute(sqlalchemy.text(
                "INSERT INTO trials (trial_id, number, study_id, state, datetime_start, "
                "datetime_complete) SELECT trial_id + :shift, number + :have, study_id, "
                "state, datetime_start, datetime_complete FROM trials WHERE number < :step"),
                {"shift": shift, "have": have, "step": step})
            for table in children:
                key = [c.name for c in table.primary_key.columns]
                columns = [c.name for c in table.c if c.name not in key]
                copied = ", ".join("trial_id + :shift" if c == "trial_id" else c
                                   for c in columns)
                conn.execute(sqlalchemy.text(
                    f"INSERT INTO {table.name} ({', '.join(columns)}) SELECT {copied} FROM "
                    f"{table.name} WHERE trial_id IN (SELECT trial_id FROM trials WHERE "
                    "number < :step)"), {"shift": shift, "step": step})
            have += step
        if engine.dialect.name == "postgresql":
            conn.execute(sqlalchemy.text(
                "SELECT setval(pg_get_serial_sequence('trials', 'trial_id'), "
                "(SELECT max(trial_id) FROM trials))"))
    if engine.dialect.name == "postgresql":
        # The planner statistics that autovacuum keeps for a study grown over weeks (its
        # ANALYZE follows every 10 % of rows changed); a copy made in seconds has none, and
        # Optuna's check of a parameter's distribution against the study's then took 2 ms
        # a parameter at 100,000 trials instead of a fraction of one. SQLite keeps no
        # statistics unless told to, so its studies are left as they are.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sqlalchemy.text("ANALYZE"))
    engine.dispose()


def _populate(storage: optuna.storages.BaseStorage, name: str, n: int, grid: bool,
              sampler: WorkerGridSampler, config: Any) -> None:
    url = str(storage.engine.url.render_as_string(hide_password=False))
    _write(storage, name, min(n, _WRITTEN), grid, sampler, config)
    if n > _WRITTEN:
        _grow(url, n)


def _write(storage: optuna.storages.BaseStorage, name: str, n: int, grid: bool,
           sampler: WorkerGridSampler, config: Any) -> None:
    # made by hpo, as a real study is (hpo refuses another program's study of that name)
    study = open_study(config, storage, sampler="grid" if grid else "random", study_name=name)
    points = sampler.points()
    grid_distributions = {k: CategoricalDistribution(v) for k, v in sampler.search_space.items()}
    space = {"optimizer": CategoricalDistribution(["Adam", "SGD", "RMSprop", "Nadam"]),
             "learning_rate": FloatDistribution(1e-5, 1e-1, log=True),
             "batch_size": CategoricalDistribution([16, 32, 64, 128])}
    start = datetime.now() - timedelta(days=1)
    batch = []
    for number in range(n):
        if grid:
            system = {"grid_id": number, "search_space": sampler.search_space}
            params, distributions = points[number], grid_distributions
        else:
            system = {}
            params = {"optimizer": ["Adam", "SGD", "RMSprop", "Nadam"][number % 4],
                      "learning_rate": 10 ** (-5 + 4 * ((number * 7919) % 1000) / 1000),
                      "batch_size": [16, 32, 64, 128][(number // 4) % 4]}
            distributions = space
        batch.append(optuna.create_trial(
            state=TrialState.COMPLETE, value=0.5 + (number % 97) / 1000,
            params=params, distributions=distributions, user_attrs=_ATTRS,
            system_attrs=system))
        batch[-1].datetime_start = start
        if len(batch) == 500:
            study.add_trials(batch)
            batch = []
    if batch:
        study.add_trials(batch)


def _hpo_per_trial(url: str, config: Any, name: str, sampler: str, m: int,
                   n: int) -> list[float]:
    """Seconds between the starts of consecutive trials of one worker loop of ``m + 1``
    trials (the first, which reads the study once, is left out)."""
    storage = open_storage(url, StorageOptions(heartbeat_interval=60))
    try:
        study = open_study(config, storage, sampler=sampler, study_name=name)
        search = SearchSettings(study=name, sampler=sampler, study_name=name, n_trials=m + 1)
        reporter = Reporter(metric="val_accuracy", quiet=True)
        run_trials(study, grid_claims(study, config, search),
                   _Instant(sample=sampler != "grid"), search, reporter)
        # only the trials this loop made (ids above the synthetic study's n): reading all
        # of a 100,000-trial study here would take minutes
        made = unwrap_storage(storage_of(study))._get_trials(study_id(study), None, set(), n)
        starts = sorted(t.datetime_start for t in made)
        return [(b - a).total_seconds() for a, b in zip(starts[1:], starts[2:])]
    finally:
        close_storage(storage)


def _before(tree: Path, url: str, study_file: Path, sampler: str, m: int, n: int, *,
            start: str | None = None) -> Any:
    """:func:`_hpo_per_trial` with the hpo package of ``tree`` (an earlier revision), in a
    child process running this script; ``start`` (a second copy of the study): instead,
    :func:`_worker_start`'s seconds on ``url``, after one untimed start on ``start`` (the
    child's first start pays its imports, which this process paid before its own)."""
    case = {"url": url, "study_file": str(study_file), "sampler": sampler, "m": m, "n": n,
            "start": start}
    done = subprocess.run([sys.executable, __file__, "--case", json.dumps(case)],
                          env={**os.environ, "PYTHONPATH": str(tree)}, check=True,
                          capture_output=True, text=True)
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert Path(answer["package"]).is_relative_to(tree), answer["package"]
    return answer["result"]


def _run_case(case: dict[str, Any]) -> None:
    """The child side of :func:`_before`: prints the start-to-start times, or the start."""
    import hpo

    config = load_study_config(Path(case["study_file"]))
    if case["start"]:
        _worker_start(case["start"], config, "scale", case["sampler"])  # imports, untimed
        result: Any = _worker_start(case["url"], config, "scale", case["sampler"])[0]
    else:
        result = _hpo_per_trial(case["url"], config, "scale", case["sampler"], case["m"],
                                case["n"])
    print(json.dumps({"package": str(Path(hpo.__file__).parent), "result": result}))


def _stock_per_trial(url: str, config: Any, name: str, sampler: str, m: int,
                     n: int) -> list[float]:
    storage = optuna.storages.RDBStorage(url, heartbeat_interval=60)
    try:
        if sampler == "grid":
            chosen = optuna.samplers.GridSampler(grid_search_space(config), seed=0)
        else:
            chosen = make_sampler(sampler, config, 0)
        study = optuna.load_study(study_name=name, storage=storage, sampler=chosen)
        times = []
        for _ in range(m):
            started = time.perf_counter()
            trial = study.ask()
            if sampler != "grid":
                _suggest(trial)
            for key, value in _ATTRS.items():
                trial.set_user_attr(key, value)
            study.tell(trial, 0.5)
            times.append(time.perf_counter() - started)
        return times
    finally:
        storage.engine.dispose()


def _worker_start(url: str, config: Any, name: str, sampler: str, *,
                  shared_read: bool = True) -> tuple[float, float]:
    """Seconds from a fresh storage to the first trial's start (the worker's opening
    summary, then claim and ask, as ``run_worker`` does), and to its first parameter (where
    TPE reads the study's history). ``shared_read=False``: a grid worker's start before
    ``GridClaims.coverage`` (its opening line read every trial, then its first claim again).
    """
    started = time.perf_counter()
    storage = open_storage(url, StorageOptions(heartbeat_interval=60))
    try:
        study = open_study(config, storage, sampler=sampler, study_name=name)
        from hpo.storage import study_lock
        from hpo.study import GridClaims, finished_trials, grid_coverage, reap_dead_trials

        claims = GridClaims(study, config, study.sampler) if sampler == "grid" else None
        if claims is not None and shared_read:  # the worker's opening line: points done /
            claims.coverage()  # left, read as it reads them now
        elif claims is not None:  # ... and as it did before: a read of its own
            grid_coverage(study, config)
        else:  # trials so far
            finished_trials(study)
        with study_lock(storage, name):  # what the worker loop does before its first trial
            reap_dead_trials(study)
            if claims is not None:
                claims.claim(retries=1)
            # a claimed grid point is created at take() (earlier revisions: queued for ask)
            trial = claims.take() if hasattr(claims, "take") else study.ask()
        elapsed = time.perf_counter() - started
        if sampler != "grid":  # a grid point comes with its parameters
            trial.suggest_categorical("optimizer", ["Adam", "SGD", "RMSprop", "Nadam"])
        first_param = time.perf_counter() - started
        study.tell(trial, 0.5)
        return elapsed, first_param
    finally:
        close_storage(storage)


def _sqlite(folder: Path, tag: str, template: str | None = None) -> str:
    path = folder / f"{tag}.db"
    if template is not None:
        import shutil

        shutil.copyfile(template.removeprefix("sqlite:///"), path)
    return f"sqlite:///{path}"


def _postgres(base: str, tag: str, template: str | None = None) -> str:
    import sqlalchemy

    engine = sqlalchemy.create_engine(base, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{tag}"'))
        source = f' TEMPLATE "{template.rsplit("/", 1)[1]}"' if template else ""
        connection.execute(sqlalchemy.text(f'CREATE DATABASE "{tag}"{source}'))
    engine.dispose()
    return base.rsplit("/", 1)[0] + f"/{tag}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[0, 1000, 10000])
    parser.add_argument("--samplers", nargs="+", default=["grid", "random", "tpe"])
    parser.add_argument("--trials", type=int, default=20, help="M: timed trials per case")
    parser.add_argument("--rounds", type=int, default=1,
                        help="times each case is timed, the sizes in alternating order (its "
                             "figure is the median of every round's trials): N = 0 and N = "
                             "100,000 side by side, not minutes apart on a noisy machine")
    parser.add_argument("--stock-grid-trials", type=int, default=5,
                        help="timed trials of stock GridSampler at N >= 10,000 (each one "
                        "reads every trial: ~45 s at 100,000 here)")
    parser.add_argument("--stock-max", type=int, default=None,
                        help="largest N at which stock Optuna is timed too (default: all)")
    parser.add_argument("--storages", nargs="+", default=["sqlite", "postgresql"],
                        choices=["sqlite", "postgresql"])
    parser.add_argument("--tpe-max", type=int, default=10000,
                        help="largest N at which TPE is timed (its own cost grows with N)")
    parser.add_argument("--postgres", default=os.environ.get("HPO_TEST_POSTGRES_URL"))
    parser.add_argument("--before", help="also time hpo's side with this git revision")
    parser.add_argument("--before-tree", type=Path,
                        help="a folder holding an exported copy of --before (no git needed)")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # the child of --before
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    logging.getLogger("hpo").setLevel(logging.ERROR)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    if args.case:
        _run_case(json.loads(args.case))
        return
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        before = None
        if args.before or args.before_tree:
            before = args.before_tree.resolve() if args.before_tree else folder / "before"
            if args.before_tree is None:
                _export(args.before, before)
        # 8 x 100 x 125 = 100,000 grid points: room for the largest study size
        rates = ", ".join(f"{1e-5 * (i + 1):.6g}" for i in range(100))
        batches = ", ".join(str(8 + i) for i in range(125))
        study_file = folder / "scale.toml"
        study_file.write_text(STUDY.format(name="scale", rates=rates, batches=batches))
        config = load_study_config(study_file)
        grid = WorkerGridSampler(grid_search_space(config))
        storages = [kind for kind in args.storages if kind == "sqlite" or args.postgres]
        made: list[str] = []  # the PostgreSQL databases made here, dropped at the end

        def on_postgres(tag: str, template: str | None = None) -> str:
            made.append(tag)
            return _postgres(args.postgres, tag, template)

        try:
            _run_storages(args, storages, folder, study_file, config, grid, before, results,
                          on_postgres)
        finally:
            if made:
                _drop_postgres(args.postgres, made)
        if before is not None and args.before_tree is None:
            subprocess.run(["git", "worktree", "remove", "--force", str(before)], cwd=ROOT,
                           check=False, capture_output=True)
    report = {"benchmark": "coordination_scale", "before": args.before, "machine": {
        "cpu": _cpu_model(), "cores": os.cpu_count(), "python": platform.python_version()},
        "trials_timed": args.trials, "rounds": args.rounds, "results": results}
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


def _drop_postgres(base: str, names: list[str]) -> None:
    """Drops the databases ``names`` on the server at ``base`` (each once)."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(base, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        for name in dict.fromkeys(names):
            connection.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


def _run_storages(args: argparse.Namespace, storages: list[str], folder: Path,
                  study_file: Path, config: Any, grid: WorkerGridSampler, before: Path | None,
                  results: list[dict[str, Any]], on_postgres: Any) -> None:
    """Every case on every storage kind, a JSON line and a row of ``results`` each."""
    for kind in storages:
        fresh = ((lambda tag, template=None: _sqlite(folder, tag, template))
                 if kind == "sqlite" else on_postgres)
        cases = [(n, sampler) for n in args.sizes for sampler in args.samplers
                 if sampler != "tpe" or n <= args.tpe_max]
        templates: dict[tuple[int, bool], tuple[str, float]] = {}
        for n, sampler in cases:  # one synthetic study per size and kind, copied per run
            key = (n, sampler == "grid")
            if key not in templates:
                url = fresh(f"scale_template_{int(key[1])}_{n}")
                built = time.perf_counter()
                storage = optuna.storages.RDBStorage(url)
                _populate(storage, "scale", n, key[1], grid, config)
                storage.engine.dispose()
                templates[key] = (url, round(time.perf_counter() - built, 1))
        rows = {case: {"storage": kind, "n": case[0], "sampler": case[1],
                       "populate_s": templates[(case[0], case[1] == "grid")][1]}
                for case in cases}
        times: dict[tuple[int, str, str], list[float]] = {}
        for round_ in range(args.rounds):
            for n, sampler in (cases if round_ % 2 == 0 else cases[::-1]):
                row = rows[(n, sampler)]
                is_grid = sampler == "grid"
                template = templates[(n, is_grid)][0]
                sides = ["hpo"]
                if args.stock_max is None or n <= args.stock_max:
                    sides.append("stock")
                if before is not None:
                    sides.append("before")
                for side in sides if round_ % 2 == 0 else sides[::-1]:
                    url = fresh(f"scale_{side}_{sampler}_{n}", template)
                    m = (args.stock_grid_trials if side == "stock" and is_grid and
                         n >= 10000 else args.trials)
                    if side == "before":
                        assert before is not None
                        took = _before(before, url, study_file, sampler, m, n)
                    else:
                        runner = _hpo_per_trial if side == "hpo" else _stock_per_trial
                        took = runner(url, config, "scale", sampler, m, n)
                    times.setdefault((n, sampler, side), []).extend(took)
                if round_ == 0:
                    start, first = _worker_start(
                        fresh(f"scale_start_{sampler}_{n}", template), config,
                        "scale", sampler)
                    row["hpo_worker_start_s"] = round(start, 3)
                    row["hpo_first_param_s"] = round(first, 3)
                    if is_grid:  # the start before the opening line's read was shared
                        row["hpo_worker_start_two_reads_s"] = round(_worker_start(
                            fresh(f"scale_start2_{sampler}_{n}", template), config,
                            "scale", sampler, shared_read=False)[0], 3)
                    if before is not None:
                        row["before_worker_start_s"] = round(_before(
                            before, fresh(f"scale_start3_{sampler}_{n}", template),
                            study_file, sampler, 0, n,
                            start=fresh(f"scale_start4_{sampler}_{n}", template)), 3)
        for (n, sampler, side), took in times.items():
            rows[(n, sampler)][f"{side}_ms_per_trial"] = round(
                1000 * statistics.median(took), 1)
        for (n, sampler), row in rows.items():
            for side in ("stock", "before"):
                if f"{side}_ms_per_trial" in row:
                    row[f"hpo_over_{side}"] = round(row["hpo_ms_per_trial"] /
                                                    row[f"{side}_ms_per_trial"], 2)
            smallest = rows.get((min(args.sizes), sampler))
            if smallest is not None and n != smallest["n"]:  # growth with N, per side
                for side in ("hpo", "before"):
                    if f"{side}_ms_per_trial" in row:
                        row[f"{side}_vs_n{smallest['n']}"] = round(
                            row[f"{side}_ms_per_trial"] /
                            smallest[f"{side}_ms_per_trial"], 2)
            print(json.dumps(row), flush=True)
            results.append(row)


if __name__ == "__main__":
    main()
