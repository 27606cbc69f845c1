"""The README runs as written (issue 25, item 8).

Every ```bash block of README.md runs, in order, in one fresh folder, as a user who has
just done the quick start would type it. What stands in for the user's world, and only that:

* ``/path/to/images`` and ``/data/firearms`` (a user's own folder): a small generated folder
  of two classes;
* ``postgresql://user:password@dbhost/hpo`` (a user's server): ``HPO_TEST_POSTGRES_URL``, or
  an SQLite file beside the others where it is unset;
* the Keras cache's ImageNet weights for the transfer-learning studies (hpo never downloads):
  headless weights files of the right architecture, written from a random initialisation;
* the shipped studies that train for hours (``firearms``: 10 and 200 epochs at 227x227 and
  299x299): a copy in ``./studies/`` (which ``hpo`` reads before the shipped ones, as the
  README says) with 1-2 epochs at the smallest image sizes its architectures take (67x67,
  75x75), everything else as shipped; likewise the study file ``hpo init`` writes (the
  thesis grid's 10 and 200 epochs become 1 and 2);
* a run's budget: the quick start (``hpo run --study demo``, the README's first command)
  runs as written, its 12 trials, and keeps the promises the README makes of it
  (:func:`_the_quick_start_keeps_its_promises`); every later ``hpo run`` / ``hpo worker``
  trains at most :data:`MAX_TRIALS` trials (``--n-trials``) and :data:`MAX_REPEATS`
  repeats, a ``firearms`` run one trial
  (:data:`MAX_FIREARMS_TRIALS`: an InceptionV3 trial traces its train step for about a
  minute on 2 CPU cores, even at 75x75 and one epoch), so the whole README runs in
  minutes on CI's 2 cores (the journey test, tests/test_journey.py, runs a whole grid).

Commands that cannot run on a test machine are skipped by rule, each rule with its reason
(:data:`SKIPPED`): the install lines (this environment is that install), the test command
(this is it), Docker (no engine on the test machines; ``tests/test_docker.py`` checks the
files), ``--gpus`` (no GPU) and ``open`` (a browser). ``hpo dashboard`` is started, asked for
its page, and stopped. Every other command must exit 0 with no traceback.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shlex
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import pytest

from hpo.testing import make_image_folder
from tests.conftest import REPO, free_port

README = REPO / "README.md"
MAX_TRIALS = 2
MAX_FIREARMS_TRIALS = 1
MAX_REPEATS = 2
_BLOCK = re.compile(r"^```bash\n(.*?)^```", re.M | re.S)

#: (what a command starts with, why it does not run here)
SKIPPED = (
    (("python3.11", "-m", "venv"), "the install: this environment is that install"),
    ((".",), "the install: this environment is that install"),
    (("pip", "install"), "the install: this environment is that install"),
    (("python", "-m", "pytest"), "the test command: this test is part of it"),
    (("docker",), "no Docker engine on the test machines (tests/test_docker.py checks the "
                  "files)"),
    (("cp", "docker/.env.example"), "Docker's setup (no Docker engine on the test machines)"),
    (("open",), "opens a browser"),
)


@dataclass
class Command:
    """One command of a README block."""

    block: int
    text: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)


def readme_commands(text: str) -> list[Command]:
    """The commands of every ```bash block of ``text``, in order: lines joined where they
    end in a backslash, comments dropped, ``a && b`` split, ``VAR=value cmd`` and
    ``export VAR=value`` kept as environment."""
    commands = []
    for number, block in enumerate(_BLOCK.findall(text)):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            while words:
                cut = words.index("&&") if "&&" in words else len(words)
                part, words = words[:cut], words[cut + 1:]
                env = {}
                if part and part[0] == "export":
                    part = part[1:]
                while part and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", part[0]):
                    key, _, value = part.pop(0).partition("=")
                    env[key] = value
                commands.append(Command(number, line.strip(), part, env))
    return commands


def skipped(command: Command) -> str | None:
    """Why ``command`` does not run here, or None."""
    for start, why in SKIPPED:
        if tuple(command.argv[:len(start)]) == start:
            return why
    if "--gpus" in command.argv or "--trials-per-gpu" in command.argv:
        return "needs a GPU"
    return None


@pytest.fixture()
def server_url(tmp_path):
    """A new database on the test PostgreSQL server (the README's studies are named demo and
    firearms: a fresh database keeps them apart from every other test's), or an SQLite file
    where no server is set."""
    import uuid

    import sqlalchemy

    base = os.environ.get("HPO_TEST_POSTGRES_URL")
    if not base:
        yield f"sqlite:///{tmp_path / 'work' / 'server.db'}"
        return
    name = f"hpo_readme_{uuid.uuid4().hex[:8]}"
    admin = sqlalchemy.create_engine(base, isolation_level="AUTOCOMMIT",
                                     poolclass=sqlalchemy.pool.NullPool)
    with admin.connect() as connection:
        connection.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    try:
        yield sqlalchemy.engine.make_url(base).set(database=name).render_as_string(
            hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _stand_ins(tmp: Path, postgres: str) -> dict[str, str]:
    data = make_image_folder(tmp / "images", per_class=16, size=32)
    return {"/path/to/images": str(data), "/data/firearms": str(data),
            "postgresql://user:password@dbhost/hpo": postgres,
            "postgresql://...": postgres}


def _substitute(word: str, stand_ins: dict[str, str]) -> str:
    for what, instead in stand_ins.items():
        word = word.replace(what, instead)
    return word


def _bounded(argv: list[str]) -> list[str]:
    """A run's budget (see the module's docstring): --n-trials and --repeats capped."""
    argv = list(argv)
    trials = MAX_FIREARMS_TRIALS if "firearms" in argv else MAX_TRIALS
    for option, cap in (("--n-trials", trials), ("--repeats", MAX_REPEATS)):
        if option in argv:
            at = argv.index(option) + 1
            argv[at] = str(min(int(argv[at]), cap))
        elif option == "--n-trials":
            argv += [option, str(cap)]
    return argv


def _short(text: str) -> str:
    """A study file's text with 1-2 epochs instead of 10-200 (the thesis grid's budgets)."""
    short = text.replace("epochs = [10, 200]", "epochs = [1, 2]")
    short = re.sub(r"(\[space\.epochs\]\s*\nlow = )\d+(\s*\nhigh = )\d+", r"\g<1>1\g<2>2",
                   short)
    short = short.replace("epochs = 10\n", "epochs = 1\n")
    assert "epochs = [10" not in short and "epochs = 10\n" not in short, \
        "the thesis grid's epochs changed: update this stand-in"
    return short


def _shadow_long_studies(work: Path) -> None:
    """``./studies/firearms.toml``: the shipped file with 1-2 epochs instead of 10-200, at
    the smallest image sizes its architectures take."""
    short = _short((REPO / "studies" / "firearms.toml").read_text())
    short = short.replace("image_size = [227, 227]", "image_size = [67, 67]")
    short = short.replace("image_size = [299, 299]", "image_size = [75, 75]")
    assert "image_size = [2" not in short, "the firearms study changed: update this stand-in"
    (work / "studies").mkdir(exist_ok=True)
    (work / "studies" / "firearms.toml").write_text(short)


def _imagenet_stand_ins(keras_home: Path) -> None:
    """Headless weights files where the Keras cache keeps ImageNet's (random values of the
    right shapes: the user's real file is what the README asks them to put there)."""
    script = f"""
import keras
from keras.src.legacy.saving import legacy_h5_format
import h5py
models = keras.applications
for build, name in [(models.InceptionV3, "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5")]:
    model = build(weights=None, include_top=False)
    with h5py.File({str(keras_home / 'models')!r} + "/" + name, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)
"""
    (keras_home / "models").mkdir(parents=True, exist_ok=True)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr


def _dashboard(argv: list[str], cwd: Path, env: dict[str, str]) -> None:
    """Starts ``hpo dashboard``, asks for its page, stops it."""
    port = free_port()
    argv = [*argv, "--port", str(port)]
    proc = subprocess.Popen([sys.executable, "-m", "hpo", *argv[1:]], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.communicate()
            try:
                line = ""
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/meta",
                                            timeout=5) as answer:
                    line = answer.read().decode()
                break
            except OSError as exc:
                if getattr(exc, "code", None) == 401:  # --host 0.0.0.0: a token is required
                    break
                assert time.monotonic() < deadline, f"no dashboard on {port}: {exc}"
                time.sleep(0.3)
        del line
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=60)
    assert "Traceback" not in err, err


def _hpo(work: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "hpo", *args], cwd=work, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and "Traceback" not in done.stderr, (args, done.stderr)
    return done


def _the_quick_start_keeps_its_promises(work: Path, env: dict[str, str],
                                        done: subprocess.CompletedProcess[str]) -> None:
    """What the README says of ``hpo run --study demo``: 12 CNNs, their epochs and trial
    lines as shown, the best trial last; run again, it resumes and trains nothing; the
    study is a stock Optuna study in ``./hpo.db`` (``optuna.load_study``, the ``optuna``
    CLI), and ``hpo best`` / ``trials`` / ``studies`` read it."""
    trial_lines = [line for line in done.stdout.splitlines() if line.startswith("trial ")]
    assert len(trial_lines) == 12, done.stdout
    assert all("val_accuracy=" in line and "optimizer=" in line for line in trial_lines)
    assert "  trial 0 epoch 1/3" in done.stdout
    assert done.stdout.strip().splitlines()[-1].startswith("best: trial ")
    assert (work / "hpo.db").is_file()

    again = _hpo(work, env, "run", "--study", "demo")
    assert "grid complete: nothing left to run" in again.stdout
    assert not [line for line in again.stdout.splitlines() if line.startswith("trial ")]

    study = optuna.load_study(study_name="demo", storage=f"sqlite:///{work / 'hpo.db'}")
    assert len(study.trials) == 12
    stock = subprocess.run([str(Path(sys.executable).with_name("optuna")), "best-trial",
                            "--study-name", "demo", "--storage", "sqlite:///hpo.db", "-f",
                            "json"], cwd=work, capture_output=True, text=True, timeout=120)
    assert stock.returncode == 0, stock.stderr
    assert json.loads(stock.stdout)["number"] == study.best_trial.number

    record = json.loads(_hpo(work, env, "best", "demo", "--json").stdout)
    assert record["number"] == study.best_trial.number
    assert record["value"] == pytest.approx(study.best_value)
    assert len(record["confusion_matrix"]) == 10
    rows = list(csv.DictReader(io.StringIO(_hpo(work, env, "trials", "demo", "--csv").stdout)))
    assert len(rows) == 12 and {r["state"] for r in rows} == {"COMPLETE"}
    assert {r["optimizer"] for r in rows} == {"Adam", "SGD", "RMSprop"}
    listing = _hpo(work, env, "studies").stdout
    assert "firearms" in listing
    assert "demo                   12 trials (12 complete)" in listing


@pytest.mark.slow
def test_every_shell_block_of_the_readme_runs_in_order(tmp_path, server_url):
    commands = readme_commands(README.read_text())
    assert len(commands) > 20, "the README's blocks were not found"
    work = tmp_path / "work"
    work.mkdir()
    stand_ins = _stand_ins(tmp_path, server_url)
    keras_home = Path(os.environ["KERAS_HOME"])
    _imagenet_stand_ins(keras_home)
    env = {**os.environ, "HPO_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("HPO_STORAGE", None)
    quick_start_done = False
    ran, skips = [], []
    for command in commands:
        why = skipped(command)
        argv = [_substitute(word, stand_ins) for word in command.argv]
        extra = {k: _substitute(v, stand_ins) for k, v in command.env.items()}
        if not argv:  # `export VAR=value`
            env.update(extra)
            continue
        if argv[0] != "hpo":
            if why is None:
                raise AssertionError(f"README block {command.block}: {command.text!r} is "
                                     "neither hpo nor a known skip; teach this test about it")
            skips.append((command.text, why))
            if "hpo" in argv:  # the quick start: install && hpo run --study demo
                argv = argv[argv.index("hpo"):]
            else:
                continue
        elif why is not None:
            skips.append((command.text, why))
            continue
        quick_start = argv[1] == "run" and not quick_start_done
        if argv[1] in ("run", "worker"):
            if quick_start:
                assert argv == ["hpo", "run", "--study", "demo"], argv
                _shadow_long_studies(work)
            else:
                argv = _bounded(argv)
            quick_start_done = True
        if "HPO_DASHBOARD_TOKEN" in extra:
            extra["HPO_DASHBOARD_TOKEN"] = "readme-test-token-0123456789"
        if argv[1] == "dashboard":
            _dashboard(argv, work, {**env, **extra})
            ran.append(command.text)
            continue
        started = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "hpo", *argv[1:]], cwd=work,
                              env={**env, **extra}, capture_output=True, text=True,
                              timeout=900)
        print(f"{time.monotonic() - started:6.1f} s  {' '.join(argv)}")
        assert done.returncode == 0 and "Traceback" not in done.stderr, (
            f"README block {command.block}: {command.text!r} -> {argv} exited "
            f"{done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        ran.append(command.text)
        if quick_start:
            _the_quick_start_keeps_its_promises(work, {**env, **extra}, done)
        if argv[1] == "init":  # the study file it wrote holds the thesis grid's budgets
            for written in (work / "studies").glob("*.toml"):
                if written.name != "firearms.toml":
                    written.write_text(_short(written.read_text()))
    print(f"ran {len(ran)} README commands; skipped {len(skips)}:")
    for text, why in skips:
        print(f"  {text}: {why}")
    assert len(ran) >= 15
