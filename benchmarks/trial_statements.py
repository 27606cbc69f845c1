"""Database work per trial of hpo's worker loop: transactions (commits) and SQL statements.

Counts, not times: what a trial costs the database whatever the machine. hpo's own loop
(``hpo.execution._loop``: study lock, reaping, grid claim, ask, the sampled parameters, the
trial's records in three writes, the last with the tell) runs an objective that trains
nothing; a SQLAlchemy event listener counts every commit and statement of the timed trials
(three trials first, to start up)::

    python benchmarks/trial_statements.py --storage postgresql://postgres@127.0.0.1/test

Run it from another checkout's root (``PYTHONPATH=.``) to count an older version.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import uuid
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy

from hpo.config import load_study_config
from hpo.config import SearchSettings
from hpo.execution._loop import grid_claims, run_trials
from hpo.reporting import Reporter
from hpo.storage import StorageOptions, close_storage, open_storage
from hpo.study import open_study
from coordination_scale import STUDY, _Instant  # benchmarks/ is this script's first sys.path entry


def count(url: str, sampler: str, trials: int) -> dict[str, float]:
    logging.getLogger("hpo").setLevel(logging.ERROR)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    counted = {"commits": 0, "statements": 0}

    def on_statement(*args: Any) -> None:
        counted["statements"] += 1

    def on_commit(*args: Any) -> None:
        counted["commits"] += 1

    with tempfile.TemporaryDirectory() as folder:
        study_file = Path(folder) / "statements.toml"
        # coordination_scale's study on a small grid (8 x 5 x 4 points)
        study_file.write_text(STUDY.format(name="scale",
                                           rates="0.1, 0.01, 0.001, 0.0001, 0.00001",
                                           batches="16, 32, 64, 128"))
        config = load_study_config(study_file)
        name = f"statements-{uuid.uuid4().hex[:8]}"
        storage = open_storage(url, StorageOptions(heartbeat_interval=60))
        try:
            study = open_study(config, storage, sampler=sampler, study_name=name)
            reporter = Reporter(metric="val_accuracy", quiet=True)
            objective = _Instant(sample=sampler != "grid")
            warm = SearchSettings(study=name, sampler=sampler, study_name=name, n_trials=3)
            run_trials(study, grid_claims(study, config, warm), objective, warm, reporter)
            sqlalchemy.event.listen(sqlalchemy.engine.Engine, "before_cursor_execute",
                                    on_statement)
            sqlalchemy.event.listen(sqlalchemy.engine.Engine, "commit", on_commit)
            try:
                timed = SearchSettings(study=name, sampler=sampler, study_name=name,
                                       n_trials=trials)
                run_trials(study, grid_claims(study, config, timed), objective, timed,
                           reporter)
            finally:
                sqlalchemy.event.remove(sqlalchemy.engine.Engine, "before_cursor_execute",
                                        on_statement)
                sqlalchemy.event.remove(sqlalchemy.engine.Engine, "commit", on_commit)
        finally:
            close_storage(storage)
    return {key: value / trials for key, value in counted.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--storage", required=True, help="a database URL (SQLite or server)")
    parser.add_argument("--samplers", nargs="+", default=["grid", "random", "tpe"])
    parser.add_argument("--trials", type=int, default=10)
    args = parser.parse_args()
    for sampler in args.samplers:
        per_trial = count(args.storage, sampler, args.trials)
        print(json.dumps({"sampler": sampler, "commits_per_trial": per_trial["commits"],
                          "statements_per_trial": per_trial["statements"]}), flush=True)


if __name__ == "__main__":
    main()
