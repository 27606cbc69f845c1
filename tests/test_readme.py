"""The README runs as written (issue 25, item 8).

Every ```bash block of README.md runs, in order, as a user who has just done the quick start
would type it. The commands run as threads side by side (:func:`readme_threads`): each thread
holds every command on one study file in one storage, in the README's order, in a copy of
the folder where the quick start ran (once, for all of them); no thread reads what another
one writes, so each sees what it would see with the README run start to end in one folder.
What stands in for the user's world, and only that:

* ``/path/to/images`` and ``/data/firearms`` (a user's own folder): a small generated folder
  of two classes;
* ``postgresql://user:password@dbhost/hpo`` (a user's server): ``HPO_TEST_POSTGRES_URL``, or
  an SQLite file beside the others where it is unset;
* the Keras cache's ImageNet weights for the transfer-learning studies (hpo never downloads):
  headless weights files of the right architecture, written from a random initialisation;
* the shipped studies that train for hours (``firearms``: 10 and 200 epochs at 227x227 and
  299x299): a copy in ``./studies/`` (which ``hpo`` reads before the shipped ones, as the
  README says) with 1-2 epochs at the smallest image sizes its architectures take (67x67,
  75x75) and a seed whose first TPE trial is an AlexNet, everything else as shipped, except
  that the thread that runs it on the server runs a grid of its AlexNet half
  (:func:`_alexnet_grid_only`); likewise the study file
  ``hpo init`` writes (the thesis grid's 10 and 200 epochs become 1 and 2);
* a run's budget: the quick start (``hpo run --study demo``, the README's first command)
  runs as written, its 12 trials, and keeps the promises the README makes of it
  (:func:`_the_quick_start_keeps_its_promises`); every later ``hpo run`` / ``hpo worker``
  trains at most :data:`MAX_TRIALS` trials (``--n-trials``) and :data:`MAX_REPEATS`
  repeats, a ``firearms`` run one trial
  (:data:`MAX_FIREARMS_TRIALS`: an InceptionV3 trial traces its train step for about a
  minute on 2 CPU cores, even at 75x75 and one epoch), so the whole README runs in
  minutes on CI's 2 cores (the journey test, tests/test_journey.py, runs a whole grid).

Each command runs as a ``python -m hpo`` process of its own, except the bounded ``hpo run`` and
``hpo worker`` commands of one process, which run in this test process
(:func:`_in_this_process`).

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
import shutil
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import pytest

from hpo.testing import make_image_folder
from tests.conftest import REPO, built_once, ended, free_port, run_here

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


def _stand_ins(data: Path, postgres: str) -> dict[str, str]:
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
    # A seed whose first TPE draw (a random start-up trial) is an AlexNet: the grid's first
    # point already trains the InceptionV3 (a minute of CPU to trace), and the search's
    # path is the same for both (the space has no parameter of one architecture only).
    # Another Optuna may draw otherwise: the thread then only takes longer.
    assert "\nseed = 0\n" in short, "the firearms study's seed changed: update this stand-in"
    short = short.replace("\nseed = 0\n", "\nseed = 2\n")
    (work / "studies").mkdir(exist_ok=True)
    (work / "studies" / "firearms.toml").write_text(short)


def _alexnet_grid_only(work: Path) -> None:
    """The ``firearms`` grid without its InceptionV3 half, for the thread that runs it on the
    server: its first point is the one the SQLite thread trains (the grid's order is fixed),
    an InceptionV3 that takes a minute of CPU to trace, and training it twice checks nothing
    more. The search space keeps both architectures."""
    path = work / "studies" / "firearms.toml"
    grid = '[grid]\narchitecture = ["alexnet", "inception_v3"]\n'
    text = path.read_text()
    assert grid in text, "the firearms grid changed: update this stand-in"
    path.write_text(text.replace(grid, '[grid]\narchitecture = ["alexnet"]\n'))


def _imagenet_stand_ins(keras_home: Path) -> None:
    """Headless weights files where the Keras cache keeps ImageNet's (random values of the
    right shapes: the user's real file is what the README asks them to put there). Written
    by this test process, which has Keras loaded already (a new process would import
    TensorFlow again for it)."""
    import h5py
    import keras
    from keras.src.legacy.saving import legacy_h5_format

    (keras_home / "models").mkdir(parents=True, exist_ok=True)
    for build, name in [(keras.applications.InceptionV3,
                         "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5")]:
        model = build(weights=None, include_top=False)
        with h5py.File(keras_home / "models" / name, "w") as handle:
            legacy_h5_format.save_weights_to_hdf5_group(handle, model)
        del model


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
        out, err = ended(proc, 60)
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
    assert not [p.name for p in work.glob("hpo.db?*")]  # no lock or journal left beside it

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


@dataclass
class Step:
    """A command of the README as it runs in its thread: with the environment the README's
    ``export`` lines set before it."""

    command: Command
    env: dict[str, str]


#: The commands that name no study run with the one before them in their block, or else with
#: the one after it (``hpo init`` writes the study the next line runs).
_STUDY_FREE = ("init", "dashboard")


def _study_of(argv: list[str], names: dict[str, str]) -> str | None:
    """The study file a command works on (``demo``, ``firearms``, ``images``), or None;
    a ``--study-name`` it gives is recorded in ``names`` for the commands that read it."""
    if "--study" in argv:
        study = Path(argv[argv.index("--study") + 1]).stem
        if "--study-name" in argv:
            names[argv[argv.index("--study-name") + 1]] = study
        return study
    if len(argv) > 2 and argv[1] in ("best", "compare", "report", "export", "status",
                                     "trials"):
        return names.get(argv[2], argv[2])
    return None


def readme_threads(text: str) -> tuple[dict[str, list[Step]], list[tuple[str, str]]]:
    """The README's commands as threads that run side by side, and the skipped commands
    with why.

    A thread is every command on one study file (``demo``, ``firearms``, the study ``hpo
    init`` writes) in one storage (the SQLite file of the folder, or the server): its
    commands run in the README's order, in one folder, with the environment the README set
    before each. Threads share nothing but the quick start, which each continues from (a copy
    of its folder): what one thread's commands do, no other thread's command reads, so each
    thread sees what it would see with the whole README run in order (the ``demo`` thread
    holds every command on the quick start's own study)."""
    env: dict[str, str] = {}
    names: dict[str, str] = {}
    placed: list[tuple[Step, str | None]] = []
    skips = []
    for command in readme_commands(text):
        if not command.argv:  # `export VAR=value`
            env.update(command.env)
            continue
        why = skipped(command)
        if why is not None:  # the install parts of the quick start's line among them
            skips.append((command.text, why))
            continue
        argv = command.argv
        assert argv[0] == "hpo", (
            f"README block {command.block}: {command.text!r} is neither hpo nor a known "
            "skip; teach this test about it")
        study = _study_of(argv, names)
        assert study is not None or argv[1] in _STUDY_FREE, (
            f"README block {command.block}: {command.text!r} names no study; teach this "
            "test which thread it belongs to")
        placed.append((Step(command, {**env, **command.env}), study))
    threads: dict[str, list[Step]] = {}
    for at, (step, study) in enumerate(placed):
        if study is None:  # the one before in its block, else the one after
            block = step.command.block
            before = [s for (o, s) in reversed(placed[:at]) if o.command.block == block and s]
            after = [s for (o, s) in placed[at + 1:] if o.command.block == block and s]
            study = (before or after or [None])[0]
            assert study, f"README block {step.command.block}: {step.command.text!r}"
        words = [*step.command.argv, *step.env.values()]
        where = "server" if any("postgresql://" in word for word in words) else "sqlite"
        threads.setdefault(f"{study}-{where}", []).append(step)
    return threads, skips


THREADS, SKIPS = readme_threads(README.read_text())
QUICK_START = ["hpo", "run", "--study", "demo"]


def _built_quick_start(folder: Path) -> None:
    """The quick start as the README's first command runs it (``hpo run --study demo``, its 12
    trials), in ``work/``, with what every thread shares beside it: the stand-in data folder
    (``images/``), the image cache (``cache/``) and a Keras cache holding the ImageNet stand-in
    (``keras-home/``). Its output is kept in ``quick-start.out`` / ``.err`` for the thread
    that checks the README's promises of it."""
    (folder / "work").mkdir()
    make_image_folder(folder / "images", per_class=16, size=32)
    _imagenet_stand_ins(folder / "keras-home")
    _shadow_long_studies(folder / "work")
    env = _environment(folder, folder / "cache")
    done = subprocess.run([sys.executable, "-m", "hpo", *QUICK_START[1:]], cwd=folder / "work",
                          env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0 and "Traceback" not in done.stderr, (
        f"the quick start exited {done.returncode}\n{done.stdout[-3000:]}\n"
        f"{done.stderr[-3000:]}")
    (folder / "quick-start.out").write_text(done.stdout)
    (folder / "quick-start.err").write_text(done.stderr)


def _in_this_process(argv: list[str]) -> bool:
    """Whether a README command runs in this test process (``run_here``: the same Typer app,
    argv and environment) rather than as a ``python -m hpo`` process of its own: a bounded
    ``hpo run`` or ``hpo worker`` of one process. Each of them would only import TensorFlow
    again (about 6 CPU s each, some 50 of the suite's 900 CPU s); ``run`` and ``worker``
    start as processes in the quick start here and in the tests of signals, crashes and
    workers. The quick start, ``--workers N`` (a supervisor and its worker processes), the
    dashboard and every command that reads or writes without training (each the only run of
    its command as a process of its own) stay processes."""
    return argv[1] in ("run", "worker") and "--workers" not in argv


def _changes_to_this_process(environment: dict[str, str]) -> dict[str, str | None]:
    """``environment`` (the one a command's own process gets) as changes to this process's,
    for ``run_here``: each variable that differs, and None for each that it lacks."""
    return {**{key: None for key in os.environ if key not in environment},
            **{key: value for key, value in environment.items()
               if os.environ.get(key) != value}}


def _environment(built: Path, cache: Path) -> dict[str, str]:
    env = {**os.environ, "HPO_CACHE_DIR": str(cache), "KERAS_HOME": str(built / "keras-home")}
    env.pop("HPO_STORAGE", None)
    return env


def test_every_command_of_the_readme_runs_in_one_thread():
    """Every command of every ```bash block is either run by exactly one thread or skipped
    by a rule with its reason; the quick start opens the ``demo`` thread."""
    commands = readme_commands(README.read_text())
    assert len(commands) > 20, "the README's blocks were not found"
    threaded = [step.command.text for steps in THREADS.values() for step in steps]
    assert len(threaded) >= 15
    for command in commands:
        assert not command.argv or command.text in threaded or \
            command.text in {text for text, _ in SKIPS}, command.text
    assert THREADS["demo-sqlite"][0].command.argv == QUICK_START
    assert {"firearms-sqlite", "firearms-server", "demo-server"} <= set(THREADS)
    assert [why for text, why in SKIPS if "--gpus" in text] == ["needs a GPU"] * 3


@pytest.mark.slow
@pytest.mark.parametrize("thread", sorted(THREADS, key=lambda name: (  # longest first
    -sum((3 if "firearms" in s.command.argv else 1) * (s.command.argv[1] in ("run", "worker"))
         for s in THREADS[name]), name)))
def test_every_shell_block_of_the_readme_runs_in_order(thread, tmp_path_factory, tmp_path,
                                                       server_url):
    built = built_once(tmp_path_factory, "readme-quick-start", _built_quick_start)
    work = tmp_path / "work"
    shutil.copytree(built / "work", work)
    shutil.copytree(built / "cache", tmp_path / "cache")
    if thread == "firearms-server":
        _alexnet_grid_only(work)
    stand_ins = _stand_ins(built / "images", server_url)
    env = _environment(built, tmp_path / "cache")
    steps = THREADS[thread]
    if thread == "demo-sqlite":
        assert steps[0].command.argv == QUICK_START
        steps = steps[1:]
        done = subprocess.CompletedProcess(QUICK_START, 0, (built / "quick-start.out")
                                           .read_text(), (built / "quick-start.err")
                                           .read_text())
        _the_quick_start_keeps_its_promises(work, env, done)
    for step in steps:
        command = step.command
        argv = [_substitute(word, stand_ins) for word in command.argv]
        extra = {k: _substitute(v, stand_ins) for k, v in step.env.items()}
        if argv[1] in ("run", "worker"):
            argv = _bounded(argv)
        if "HPO_DASHBOARD_TOKEN" in extra:
            extra["HPO_DASHBOARD_TOKEN"] = "readme-test-token-0123456789"
        if argv[1] == "dashboard":
            _dashboard(argv, work, {**env, **extra})
            continue
        started = time.monotonic()
        if _in_this_process(argv):
            done = run_here(*argv[1:], cwd=work, env=_changes_to_this_process({**env, **extra}))
        else:
            done = subprocess.run([sys.executable, "-m", "hpo", *argv[1:]], cwd=work,
                                  env={**env, **extra}, capture_output=True, text=True,
                                  timeout=900)
        print(f"{time.monotonic() - started:6.1f} s  {' '.join(argv)}")
        assert done.returncode == 0 and "Traceback" not in done.stderr, (
            f"README block {command.block}: {command.text!r} -> {argv} exited "
            f"{done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        if argv[1] == "init":  # the study file it wrote holds the thesis grid's budgets
            for written in (work / "studies").glob("*.toml"):
                if written.name != "firearms.toml":
                    written.write_text(_short(written.read_text()))
