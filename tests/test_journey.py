"""A user's journey on one study, the numbers checked at every step (issue 25, item 9).

Quick start (the grid) -> a search beyond it -> repeats -> compare -> report -> export ->
dashboard, each step an ``hpo`` command as a user types it, in one folder with one SQLite
file; after each step what it printed is compared with what the database holds (read with
stock Optuna, not through hpo). The commands run in this test process (``run_here``, the same
Typer app) and the dashboard in a process of its own: the README's test runs each of these
commands as a ``python -m hpo`` process (tests/test_readme.py), and a process of its own for
each step here would only import TensorFlow again, three times (about 16 CPU s of the suite).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from hpo.testing import write_study
from tests.conftest import ended, free_port, run_here

_TRIAL_LINE = re.compile(r"^trial\s+(\d+)\s+val_accuracy=([0-9.]+)\s+test_accuracy=([0-9.]+)",
                         re.M)
_BEST_LINE = re.compile(r"^best: trial (\d+)\s+val_accuracy=([0-9.]+)", re.M)


def _stored(url: str, name: str) -> dict[int, optuna.trial.FrozenTrial]:
    return {t.number: t for t in optuna.load_study(study_name=name, storage=url).trials}


def _ok(done: subprocess.CompletedProcess[str], step: str) -> str:
    assert done.returncode == 0 and "Traceback" not in done.stderr, (
        f"{step}: exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done.stdout


def _printed_trials_match(stdout: str, trials: dict[int, optuna.trial.FrozenTrial],
                          step: str) -> set[int]:
    printed = set()
    for number, value, test in _TRIAL_LINE.findall(stdout):
        trial = trials[int(number)]
        assert trial.state == TrialState.COMPLETE, (step, number, trial.state)
        assert f"{trial.value:.4f}" == value, (step, number, trial.value, value)
        assert f"{trial.user_attrs['test_accuracy']:.4f}" == test, (step, number)
        printed.add(int(number))
    return printed


@pytest.mark.slow
def test_quick_start_grid_search_repeats_compare_report_export_dashboard(tmp_path,
                                                                         image_folder):
    name = f"journey-{uuid.uuid4().hex[:6]}"
    study_file = write_study(tmp_path / "journey.toml", data=image_folder, name=name)
    url = f"sqlite:///{tmp_path / 'hpo.db'}"

    def hpo(*args: str, step: str) -> str:
        return _ok(run_here(*args, "--storage", url, cwd=tmp_path), step)

    # 1. The grid (the thesis's method): every point once, each printed line as stored.
    out = hpo("run", "--study", str(study_file), step="grid")
    grid = _stored(url, name)
    assert sorted(t.state for t in grid.values()) == [TrialState.COMPLETE] * 4
    assert _printed_trials_match(out, grid, "grid") == set(grid)
    best_number, best_value = _BEST_LINE.search(out).groups()
    best = max(grid.values(), key=lambda t: t.value)
    assert int(best_number) == best.number and f"{best.value:.4f}" == best_value
    for trial in grid.values():  # one epoch per result, recorded
        assert trial.user_attrs["result_epoch"] == len(trial.intermediate_values)

    # 2. A search beyond the grid, on the same study: the grid's results are its history.
    done = run_here("run", "--study", str(study_file), "--sampler", "tpe", "--n-trials", "2",
                    "--seed", "1", "--storage", url, cwd=tmp_path)
    out = _ok(done, "search")
    search = _stored(url, f"{name}.search")
    taken = [t for t in search.values() if "imported_from" in t.user_attrs]
    ran = [t for t in search.values() if "imported_from" not in t.user_attrs]
    assert len(ran) == 2 and all(t.state == TrialState.COMPLETE for t in ran)
    assert re.search(rf"took {len(taken)} finished trial", done.stderr), done.stderr
    for copy in taken:  # each copy is the grid trial it names, with its value
        source = grid[copy.user_attrs["imported_from"]["trial"]]
        assert copy.value == source.value and copy.params == source.params
    assert _printed_trials_match(out, search, "search") == {t.number for t in ran}
    assert not [t for t in _stored(url, name).values() if t.number not in grid]  # grid intact

    # 3. `hpo best` over the pair, `hpo trials` and `hpo status` as stored.
    shown = json.loads(hpo("best", name, "--json", step="best"))
    everything = [*grid.values(), *ran]
    top = max(everything, key=lambda t: t.value)
    assert shown["value"] == pytest.approx(top.value)
    listed = json.loads(hpo("trials", name, "--json", step="trials"))
    rows = listed if isinstance(listed, list) else listed["trials"]
    assert {r["number"]: r["value"] for r in rows} == {n: t.value for n, t in grid.items()}
    status = json.loads(hpo("status", name, "--json", step="status"))
    assert status["grid"]["done"] == 4 and status["grid"]["left"] == 0, status

    # 4. Repeats (a study of their own: a value that is a mean means something else).
    refused = run_here("run", "--study", str(study_file), "--repeats", "2", "--storage", url,
                       cwd=tmp_path)
    assert refused.returncode == 2 and "--study-name" in refused.stderr, refused.stderr
    repeated = f"{name}-x2"
    out = hpo("run", "--study", str(study_file), "--repeats", "2", "--study-name", repeated,
              "--n-trials", "2", step="repeats")
    runs = _stored(url, repeated)
    assert len(runs) == 2
    for trial in runs.values():
        values = trial.user_attrs["repeat_values"]
        assert len(values) == 2 and trial.value == pytest.approx(sum(values) / 2)
        low, high = trial.user_attrs["value_ci95"]
        assert min(values) <= low <= high <= max(values)  # inside the values' bounds
    assert _printed_trials_match(out, runs, "repeats") == set(runs)

    # 5. Compare two repeated configurations: the printed means are the stored ones.
    out = hpo("compare", repeated, "0", "1", step="compare")
    for number in (0, 1):
        mean = re.search(rf"^trial {number}: mean ([0-9.]+)", out, re.M).group(1)
        assert mean == f"{runs[number].value:.4f}", out

    # 6. The report's tables hold the stored numbers.
    hpo("report", name, "--format", "csv", "--out", "report", step="report")
    text = (tmp_path / "report" / "report.csv").read_text()
    assert f"{top.value:.4f}" in text or f"{top.value}" in text, text[:2000]

    # 7. Export the best model: the trial `hpo best` named, and the file is a model.
    out = hpo("export", name, "--model", "best", "--out", "best.keras", step="export")
    exported = re.search(r"\(trial (\d+)(?: of (\S+))?\)", out)
    assert int(exported.group(1)) == shown["number"], out
    assert (exported.group(2) or name) == shown["study"], (out, shown["study"])
    assert (tmp_path / "best.keras").stat().st_size > 0

    # 8. The dashboard lists both studies with their stored trial counts.
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "hpo", "dashboard", "--study", name,
                             "--storage", url, "--port", str(port)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.communicate()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies",
                                            timeout=5) as answer:
                    studies = json.loads(answer.read())["study_summaries"]
                break
            except OSError:
                assert time.monotonic() < deadline, "the dashboard did not start"
                time.sleep(0.3)
    finally:
        proc.terminate()
        ended(proc, 60)
    counts = {s["study_name"]: s.get("n_trials") for s in studies}
    assert counts.get(name) in (None, len(grid)) and name in counts
    assert f"{name}.search" in counts and repeated in counts
