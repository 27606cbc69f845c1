"""The database-restart scenario of issue 17, run N times against the real PostgreSQL server.

Each round: a fresh database; ``hpo run --workers 2`` on a 12-point grid of the tiny study;
as soon as both workers train, the PostgreSQL server is stopped (every connection dropped),
kept down ``--down`` seconds (default 5) and started again; then the run must end
by itself with exit 0, every grid point COMPLETE exactly once, no trial left RUNNING. The
log of every round that fails is kept. Needs root (or the postgres user) on the machine
that runs the server; not part of the test suite (it restarts the shared server).

    python tests/scenarios/pg_restart.py --rounds 20 --out pg_restart.json

Each round's line says how many "unreachable" warnings the workers printed (the outage was
met mid-trial) and how long the run took after the server was stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import optuna
import sqlalchemy
from optuna.trial import TrialState

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from hpo.testing import make_image_folder, write_study  # noqa: E402

BASE = os.environ.get("HPO_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _database(name: str) -> str:
    engine = sqlalchemy.create_engine(BASE, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return BASE.rsplit("/", 1)[0] + f"/{name}"


def _restart_server(down: float) -> None:
    """Stops the server (every connection dropped), keeps it down ``down`` seconds, starts
    it again."""
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    for action in ("stop", "start"):
        subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action],
                       check=True, timeout=120)
        if action == "stop":
            time.sleep(down)


def _trials(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    storage = optuna.storages.RDBStorage(url)
    try:
        return optuna.load_study(study_name=name, storage=storage).get_trials()
    finally:
        storage.engine.dispose()


def _round(folder: Path, images: Path, number: int, down: float) -> dict[str, object]:
    name = f"restart-{uuid.uuid4().hex[:8]}"
    url = _database(name.replace("-", "_"))
    study = write_study(folder / f"{name}.toml", data=images, name=name, epochs=3,
                        extra_grid="batch_size = [8, 16, 32]")
    log = folder / f"{name}.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hpo", "run", "--study", str(study), "--workers", "2",
             "--heartbeat", "2", "--outage-timeout", "120"],
            cwd=folder, env={**os.environ, "HPO_STORAGE": url, "PYTHONPATH": str(REPO)},
            stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                running = [t for t in _trials(url, name) if t.state == TrialState.RUNNING]
            except (KeyError, sqlalchemy.exc.SQLAlchemyError):
                running = []
            if len(running) >= 2:
                break
            time.sleep(0.5)
        restarted = time.monotonic()
        _restart_server(down)
        code = proc.wait(timeout=600)
    trials = _trials(url, name)
    points = [tuple(sorted(t.params.items())) for t in trials if t.state == TrialState.COMPLETE]
    result = {"round": number, "exit": code, "seconds_after_restart":
              round(time.monotonic() - restarted, 1),
              "complete_points": len(set(points)), "complete_trials": len(points),
              "running_left": sum(t.state == TrialState.RUNNING for t in trials),
              "failed_trials": sum(t.state == TrialState.FAIL for t in trials)}
    text = log.read_text()
    result["outage_warnings"] = text.count("unreachable")
    result["ok"] = (code == 0 and result["complete_points"] == 12 and
                    result["complete_trials"] == 12 and result["running_left"] == 0)
    if not result["ok"]:
        result["log"] = text[-4000:]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--down", type=float, default=5.0, help="seconds the server is down")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        images = make_image_folder(folder / "images", per_class=24)
        for number in range(args.rounds):
            result = _round(folder, images, number, args.down)
            print(json.dumps({k: v for k, v in result.items() if k != "log"}), flush=True)
            results.append(result)
    summary = {"rounds": len(results), "ok": sum(bool(r["ok"]) for r in results),
               "results": results}
    if args.out:
        args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{summary['ok']} of {summary['rounds']} rounds ended cleanly")


if __name__ == "__main__":
    main()
