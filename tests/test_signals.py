"""Signals from shells and schedulers, whatever disposition the process inherited.

Every process here starts with SIGINT *ignored*, as a script's background job (``cmd &``),
``nohup`` and many CI runners start it: hpo must install its own handlers. The other
signals start at their defaults, whatever the test run itself inherited
(:func:`_only_sigint_ignored`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from hpo.execution import STOP_SIGNALS
from hpo.testing import write_study
from tests.conftest import ended, free_port, run_here, wait_for_port, wait_for_training


def _only_sigint_ignored() -> None:
    """SIGINT ignored, as a script's background job inherits it; every other signal hpo
    handles at its default, whatever this test process inherited (started as a background
    job itself, it has SIGQUIT ignored too, and under ``nohup`` SIGHUP, which hpo then
    rightly leaves alone: the tests that send them assume a terminal's defaults). Runs in
    the child between fork and exec: nothing is imported there."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _in_own_process(script: str) -> subprocess.CompletedProcess[str]:
    """Runs ``script`` in a Python process of its own (only a main thread has signal
    handlers), started with SIGINT ignored as a script's background job is."""
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, preexec_fn=_only_sigint_ignored)


def _start(cwd: Path, storage: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "hpo", *args, "--quiet"], cwd=cwd,
                            env={**os.environ, "HPO_STORAGE": storage},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_only_sigint_ignored)


def _trials(name: str, storage: str) -> list[optuna.trial.FrozenTrial]:
    rdb = optuna.storages.RDBStorage(storage)
    try:
        return optuna.load_study(study_name=name, storage=rdb).get_trials()
    finally:
        rdb.engine.dispose()


def test_sigint_stops_a_worker_that_inherited_sigint_ignored(tmp_path, image_folder):
    study = write_study(tmp_path / "s.toml", data=image_folder, name="ign", epochs=30)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    proc = _start(tmp_path, storage, "run", "--study", str(study), "--heartbeat", "1")
    victim = wait_for_training("ign", storage, proc)
    proc.send_signal(signal.SIGINT)
    out, err = ended(proc, 60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("hpo: error: interrupted")
    trials = _trials("ign", storage)
    assert trials[victim.number].state == TrialState.FAIL
    assert trials[victim.number].user_attrs["fail_reason"] == "interrupted (Ctrl-C)"
    assert not [t for t in trials if t.state == TrialState.RUNNING]


@pytest.mark.postgres
def test_sigterm_fails_the_trial_at_once_and_exits_143(tmp_path, image_folder, postgres_url):
    name = f"term-{uuid.uuid4().hex[:8]}"
    study = write_study(tmp_path / "s.toml", data=image_folder, name=name, epochs=12)
    proc = _start(tmp_path, postgres_url, "worker", "--study", str(study), "--heartbeat", "60")
    victim = wait_for_training(name, postgres_url, proc)
    proc.send_signal(signal.SIGTERM)
    out, err = ended(proc, 60)
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    assert "stopped (SIGTERM)" in err.strip().splitlines()[-1]
    # Checked at once: no heartbeat grace (60 s x 3 here) to wait for.
    trials = _trials(name, postgres_url)
    assert trials[victim.number].state == TrialState.FAIL
    assert trials[victim.number].user_attrs["fail_reason"] == "stopped (SIGTERM)"
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    # The point is free for the next worker at once: it trains it again (in this process:
    # the worker's own path is the one stopped above).
    resumed = run_here("worker", "--study", str(study), "--n-trials", "1", "--quiet",
                       cwd=tmp_path, env={"HPO_STORAGE": postgres_url})
    assert resumed.returncode == 0, resumed.stderr
    again = [t for t in _trials(name, postgres_url) if t.params == victim.params]
    assert [t.state for t in again] == [TrialState.FAIL, TrialState.COMPLETE]
    optuna.delete_study(study_name=name, storage=postgres_url)


@pytest.mark.postgres
@pytest.mark.keras_backend("jax")  # the supervisor's part: TensorFlow workers' own are above
def test_the_supervisor_passes_sigterm_on_and_exits_with_the_workers_status(
        tmp_path, image_folder, postgres_url):
    name = f"sup-{uuid.uuid4().hex[:8]}"
    study = write_study(tmp_path / "s.toml", data=image_folder, name=name, epochs=30)
    proc = _start(tmp_path, postgres_url, "run", "--study", str(study), "--workers", "2")
    wait_for_training(name, postgres_url, proc)
    proc.send_signal(signal.SIGTERM)
    out, err = ended(proc, 90)
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    trials = _trials(name, postgres_url)
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    # Every worker that had a trial in flight marked it stopped (at least the one seen).
    stopped = [t for t in trials if t.user_attrs.get("fail_reason") == "stopped (SIGTERM)"]
    assert stopped and all(t.state == TrialState.FAIL for t in stopped)
    optuna.delete_study(study_name=name, storage=postgres_url)



@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 0), (signal.SIGTERM, 143)])
def test_the_dashboard_stops_on_sigint_and_sigterm(tmp_path, signum, code):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    optuna.create_study(study_name="d", storage=storage)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "hpo", "dashboard", "--storage", storage,
                             "--port", str(port)], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=_only_sigint_ignored)
    wait_for_port(port, proc)
    proc.send_signal(signum)
    out, err = ended(proc, 30)
    assert proc.returncode == code, err
    assert "dashboard stopped" in out
    assert "Traceback" not in err


SLOW_SHUTDOWN_SCRIPT = """
import sys, threading, time
from hpo.execution import serve_until_signal

class Server:  # a server whose shutdown hangs, as one stuck in a request can
    def serve_forever(self):
        print("serving", flush=True)
        threading.Event().wait()
    def shutdown(self):
        print("stopping", flush=True)
        time.sleep(60)
    def server_close(self):
        pass

sys.exit(serve_until_signal(Server()))
"""


def test_a_second_sigterm_ends_a_server_stuck_in_its_shutdown_at_once():
    proc = subprocess.Popen([sys.executable, "-c", SLOW_SHUTDOWN_SCRIPT], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "serving\n"  # the handlers are in place
    proc.send_signal(signal.SIGTERM)
    assert proc.stdout.readline() == "stopping\n"
    proc.send_signal(signal.SIGTERM)
    _, err = ended(proc, 30)
    assert proc.returncode == 143, err
    assert err.strip() == "hpo: SIGTERM again: stopping at once"


@pytest.mark.parametrize("sampler", ["grid", "random"])
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_signal_just_after_a_trial_is_created_still_ends_that_trial(
        signum, sampler, tiny_study, sqlite_url, monkeypatch):
    """The window between a trial's creation under the study lock (``GridClaims.take`` for
    a grid point, ``Study.ask`` otherwise) and the trial's ``try``: a signal landing there
    is held and delivered inside the try, so the new trial is told FAIL at once instead of
    staying RUNNING until its heartbeat expires."""
    import optuna

    import hpo
    from hpo.errors import Stopped
    from hpo.execution import worker_signals
    from hpo.study import GridClaims

    owner, name = (GridClaims, "take") if sampler == "grid" else (optuna.Study, "ask")
    create = getattr(owner, name)

    def create_then_signal(self, *args, **kwargs):
        trial = create(self, *args, **kwargs)
        os.kill(os.getpid(), signum)  # delivered at the next bytecode boundary
        return trial

    monkeypatch.setattr(owner, name, create_then_signal)
    expected = KeyboardInterrupt if signum == signal.SIGINT else Stopped
    with pytest.raises(expected), worker_signals():
        hpo.run(tiny_study, storage=sqlite_url, sampler=sampler)
    monkeypatch.undo()
    study = optuna.load_study(study_name=optuna.get_all_study_names(sqlite_url)[0],
                              storage=sqlite_url)
    [trial] = study.trials
    assert trial.state == optuna.trial.TrialState.FAIL
    assert trial.user_attrs["fail_reason"] == (
        "interrupted (Ctrl-C)" if signum == signal.SIGINT else
        f"stopped ({signal.Signals(signum).name})")


def test_ctrl_c_in_the_middle_of_an_sqlite_write_leaves_the_file_consistent_and_unlocked(
        tiny_study, tmp_path, monkeypatch):
    """A Ctrl-C that lands while a trial's records are being written to SQLite (inside the
    transaction, before its commit): nothing of that half-written transaction is stored,
    the trial is told FAIL "interrupted", and the file is not left locked for the next
    worker."""
    import hpo
    import hpo.storage._optuna as optuna_glue
    import hpo.storage._resilient as resilient

    storage = f"sqlite:///{tmp_path / 'w.db'}"
    write, drop = resilient.write_trial_user_attrs, optuna_glue._drop_system_attrs
    armed = []

    def records(storage, trial_id, attrs, drop=()):
        if "test_accuracy" in attrs:  # the evaluation's records
            armed.append(trial_id)
        write(storage, trial_id, attrs, drop=drop)

    def interrupted_mid_transaction(session, trial_id, keys):
        drop(session, trial_id, keys)
        if armed:  # the records are written, the transaction not yet committed
            armed.clear()
            raise KeyboardInterrupt

    monkeypatch.setattr(resilient, "write_trial_user_attrs", records)
    monkeypatch.setattr(optuna_glue, "_drop_system_attrs", interrupted_mid_transaction)
    with pytest.raises(KeyboardInterrupt):
        hpo.run(tiny_study, storage=storage)
    monkeypatch.undo()
    [trial] = optuna.load_study(study_name=optuna.get_all_study_names(storage)[0],
                                storage=storage).trials
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs["fail_reason"] == "interrupted (Ctrl-C)"
    assert "test_accuracy" not in trial.user_attrs  # the interrupted transaction left nothing
    assert "seed" in trial.user_attrs  # the set-up's records, committed before, are there
    again = hpo.run(tiny_study, storage=storage)  # the next worker: not locked out
    assert {t.state for t in again.trials[1:]} == {TrialState.COMPLETE}


GC_CALLBACK_SCRIPT = """
import gc, signal, sys, time
from hpo.execution._signals import worker_signals

swallowed, armed = [], [True]

def callback(phase, info):
    if phase == "start" and armed:
        armed.clear()
        signal.raise_signal(signal.SIGINT)  # its handler runs in this callback
        for _ in range(1000):
            pass

sys.unraisablehook = swallowed.append
gc.callbacks.append(callback)
try:
    with worker_signals():
        gc.collect()
        time.sleep(5)  # delivered again, here
    print("not interrupted")
except KeyboardInterrupt:
    print("interrupted", "armed" if armed else "fired", "swallowed" if swallowed else "clean")
"""


def _interrupted(setup: str, body: str) -> str:
    """A script that runs ``body`` under :func:`worker_signals` (after ``setup``) and prints
    whether a KeyboardInterrupt came out of it."""
    indented = "".join(f"        {line}\n" for line in body.strip().splitlines())
    return (f"import signal, sys, time, weakref\n"
            f"from hpo.execution._signals import worker_signals\n"
            f"{setup}\n"
            f"try:\n    with worker_signals():\n{indented}"
            f"    print('not interrupted')\n"
            f"except KeyboardInterrupt:\n    print('interrupted')\n")


WEAKREF_CALLBACK_SCRIPT = _interrupted("""
class Thing:
    pass

def callback(ref):
    signal.raise_signal(signal.SIGINT)  # its handler runs in this callback, whose
    for _ in range(1000):  # exception Python reports and drops
        pass

thing = Thing()
ref = weakref.ref(thing, callback)
""", """
del thing  # the callback runs here
time.sleep(5)  # delivered again, here
""")


def test_ctrl_c_during_a_weakref_callback_is_not_lost():
    # Seen in a probe that sent Ctrl-C to `hpo run` at random moments (3 of 25 runs): the
    # signal landed in WeakKeyDictionary's callback, Python printed "Exception ignored" and
    # the worker ran its grid to the end, exit 0.
    done = _in_own_process(WEAKREF_CALLBACK_SCRIPT)
    assert done.stdout.strip() == "interrupted", done.stdout + done.stderr
    assert "Exception ignored" not in done.stderr


SWALLOWED_SCRIPT = _interrupted("""
from hpo.execution._signals import raise_if_swallowed

def library_code():  # as TensorFlow's tracing did with a Ctrl-C, once in 20 runs
    try:
        signal.raise_signal(signal.SIGINT)
    except BaseException:
        pass
""", """
raise_if_swallowed()  # nothing received: nothing raised
library_code()
raise_if_swallowed()  # where the next trial would start
""")


def test_a_ctrl_c_that_library_code_swallowed_stops_the_worker_before_its_next_trial():
    done = _in_own_process(SWALLOWED_SCRIPT)
    assert done.stdout.strip() == "interrupted", done.stdout + done.stderr


SWALLOWED_MID_TRIAL_SCRIPT = """
import signal, sys
from hpo.cli import main
from hpo.trial import _callbacks

swallow = _callbacks.NanGuard.on_train_batch_end
batches = []

def library_code(self, batch, logs=None):  # a SIGTERM swallowed during the third batch
    batches.append(batch)
    if len(batches) == 3:
        try:
            signal.raise_signal(signal.SIGTERM)
        except BaseException:
            pass
    swallow(self, batch, logs)

_callbacks.NanGuard.on_train_batch_end = library_code
sys.argv[0] = "hpo"
try:
    main()
finally:
    print("batches", len(batches), flush=True)
"""


def test_a_stop_that_library_code_swallowed_ends_the_trial_at_the_next_batch(tmp_path,
                                                                              image_folder):
    """A SIGTERM whose exception library code swallowed mid-trial (TensorFlow tracing a
    step) stops the worker at the next batch, its trial FAIL "stopped (SIGTERM)", not at
    the end of the trial's 200 epochs (seen: a worker deaf to SIGTERM for minutes)."""
    study = write_study(tmp_path / "s.toml", data=image_folder, name="deaf", epochs=200)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    proc = subprocess.run([sys.executable, "-c", SWALLOWED_MID_TRIAL_SCRIPT, "run",
                           "--study", str(study), "--storage", storage, "--quiet",
                           "--no-figures", "--n-trials", "1"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          preexec_fn=_only_sigint_ignored)
    assert proc.returncode == 143, proc.stdout + proc.stderr
    # the fourth batch's end stopped it, before the library's callback saw that batch
    assert proc.stdout.strip().splitlines()[-1] == "batches 3", proc.stdout
    trial, = _trials("deaf", storage)
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs["fail_reason"] == "stopped (SIGTERM)"


def test_ctrl_c_during_a_garbage_collector_callback_is_not_lost():
    # JAX (imported by Keras whenever it is installed) runs a callback at every collection;
    # a KeyboardInterrupt raised inside one is printed and dropped by Python (seen once in
    # CI: a traceback on Ctrl-C). Here the signal lands inside such a callback. In a
    # process of its own: only a main thread has signal handlers.
    done = _in_own_process(GC_CALLBACK_SCRIPT)
    assert done.stdout.strip() == "interrupted fired clean", done.stdout + done.stderr
    assert "Exception ignored" not in done.stderr


# Every signal whose default action ends the process (hpo/execution/_signals.py's table).

EVERY_SIGNAL_SCRIPT = """
import os, signal, time
from hpo.errors import Stopped
from hpo.execution._signals import STOP_SIGNALS, worker_signals

signal.signal(signal.SIGUSR2, signal.SIG_IGN)  # as nohup leaves SIGHUP: stays ignored
before = {s: signal.getsignal(s) for s in STOP_SIGNALS}
for signum in STOP_SIGNALS:
    if signum in (signal.SIGINT, signal.SIGUSR2):
        continue
    try:
        with worker_signals():
            os.kill(os.getpid(), signum)
            time.sleep(5)
        print(signal.Signals(signum).name, "not stopped")
    except Stopped as stop:
        print(signal.Signals(signum).name, stop, stop.exit_code - 128 == signum)
with worker_signals():
    os.kill(os.getpid(), signal.SIGUSR2)
    print("SIGUSR2 ignored", signal.getsignal(signal.SIGUSR2) == signal.SIG_IGN)
print("restored", {s: signal.getsignal(s) for s in STOP_SIGNALS} == before)
"""


def test_every_signal_that_ends_a_process_stops_a_worker_with_its_name():
    done = _in_own_process(EVERY_SIGNAL_SCRIPT)
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0, done.stdout + done.stderr
    from hpo.execution import STOP_SIGNALS

    names = [signal.Signals(s).name for s in STOP_SIGNALS
             if s not in (signal.SIGINT, signal.SIGUSR2)]
    assert {"SIGHUP", "SIGTERM", "SIGQUIT", "SIGUSR1", "SIGALRM", "SIGXCPU"} <= set(names)
    assert lines[:-2] == [f"{name} stopped ({name}) True" for name in names]
    assert lines[-2:] == ["SIGUSR2 ignored True", "restored True"]


REPEATS_SCRIPT = """
import os, signal, sys, time
from hpo.errors import Stopped
from hpo.execution._signals import worker_signals

with worker_signals():
    try:
        os.kill(os.getpid(), signal.SIGHUP)
        time.sleep(5)
    except Stopped as stop:  # the trial in flight is being told its end
        os.kill(os.getpid(), signal.SIGHUP)  # the kernel's hang-up after the shell's
        time.sleep(0.2)
        print("second SIGHUP ignored", flush=True)
        os.kill(os.getpid(), signal.SIGTERM)  # a person insisting
        time.sleep(5)
        print("second SIGTERM ignored")
"""


def test_a_repeated_hang_up_is_one_stop_and_an_insisting_sigterm_ends_at_once():
    done = _in_own_process(REPEATS_SCRIPT)
    assert done.stdout.strip() == "second SIGHUP ignored", done.stdout + done.stderr
    assert done.returncode == 143
    assert done.stderr.strip() == "hpo: SIGTERM again: stopping at once"


def test_sighup_fails_the_trial_and_exits_129(tmp_path, image_folder):
    # What a closed SSH session sends: the trial in flight was left RUNNING, no message.
    study = write_study(tmp_path / "s.toml", data=image_folder, name="hup", epochs=30)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    proc = _start(tmp_path, storage, "worker", "--study", str(study), "--heartbeat", "1")
    victim = wait_for_training("hup", storage, proc)
    proc.send_signal(signal.SIGHUP)
    out, err = ended(proc, 60)
    assert proc.returncode == 129, err
    assert "Traceback" not in err
    [line] = [line for line in err.strip().splitlines() if line.startswith("hpo: error")]
    assert line.startswith("hpo: error: stopped (SIGHUP)")
    trials = _trials("hup", storage)
    assert trials[victim.number].state == TrialState.FAIL
    assert trials[victim.number].user_attrs["fail_reason"] == "stopped (SIGHUP)"
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    from tests.test_notes import _note  # the dashboard's note says why, too
    assert "- fail reason: stopped (SIGHUP)" in _note(storage, "hup", victim.number)


@pytest.mark.keras_backend("jax")  # the supervisor's part (tests/conftest.py)
def test_the_supervisor_passes_sighup_on_to_its_workers(tmp_path, image_folder):
    study = write_study(tmp_path / "s.toml", data=image_folder, name="suphup", epochs=30)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    proc = _start(tmp_path, storage, "run", "--study", str(study), "--workers", "2",
                  "--heartbeat", "1")
    wait_for_training("suphup", storage, proc)
    proc.send_signal(signal.SIGHUP)
    out, err = ended(proc, 90)
    assert proc.returncode == 129, err
    assert "Traceback" not in err
    trials = _trials("suphup", storage)
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    stopped = [t for t in trials if t.user_attrs.get("fail_reason") == "stopped (SIGHUP)"]
    assert stopped and all(t.state == TrialState.FAIL for t in stopped)


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie nobody reaped yet counts as ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait_until_ended(pids: list[int], timeout: float) -> list[int]:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and [p for p in pids if _alive(p)]:
        time.sleep(0.2)
    return [p for p in pids if _alive(p)]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
@pytest.mark.keras_backend("jax")  # processes: tests/conftest.py
def test_workers_stop_when_their_supervisor_is_killed(tmp_path, image_folder):
    # kill -9 of `hpo run --workers 2` left both workers training on their own, out of reach
    # of Ctrl-C, their trials RUNNING once they were killed in turn.
    study = write_study(tmp_path / "s.toml", data=image_folder, name="orphan", epochs=30)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    proc = _start(tmp_path, storage, "run", "--study", str(study), "--workers", "2",
                  "--heartbeat", "1")
    victim = wait_for_training("orphan", storage, proc)
    workers = _children(proc.pid)
    assert len(workers) == 2, workers
    proc.kill()
    ended(proc, 30)
    assert _wait_until_ended(workers, timeout=60) == []
    trials = _trials("orphan", storage)
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert trials[victim.number].state == TrialState.FAIL
    # the supervisor's death named, or, where the worker's own stop raced the kernel's
    # parent-death SIGTERM (seen once in 2 clean-clone runs), that SIGTERM: either way the
    # worker stopped and its trial is FAIL, never RUNNING
    assert trials[victim.number].user_attrs["fail_reason"] in (
        f"stopped (its supervisor, process {proc.pid}, died)", "stopped (SIGTERM)")


ORPHAN_SCRIPT = """
import os, signal, subprocess, sys, time
child = '''
import os, sys, time
import hpo.execution._signals as signals
from hpo.errors import Stopped
if sys.argv[1] == "poll":  # where prctl is not available (not Linux)
    signals.set_parent_death_signal = lambda signum: False
with signals.worker_signals():
    try:
        signals.watch_parent(int(sys.argv[2]))
        open(sys.argv[3] + ".ready", "w").close()
        time.sleep(60)
    except Stopped as stop:
        open(sys.argv[3], "w").write(str(stop))
'''
proc = subprocess.Popen([sys.executable, "-c", child, sys.argv[1], str(os.getpid()),
                         sys.argv[2]], start_new_session=True)
print(proc.pid, flush=True)
while not os.path.exists(sys.argv[2] + ".ready"):
    time.sleep(0.05)
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("how", ["prctl", "poll"])
def test_a_worker_process_stops_when_its_parent_dies(tmp_path, how):
    if how == "prctl" and not sys.platform.startswith("linux"):
        pytest.skip("PR_SET_PDEATHSIG is Linux's")
    told = tmp_path / "told"
    proc = subprocess.Popen([sys.executable, "-c", ORPHAN_SCRIPT, how, str(told)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = ended(proc, 60)
    assert proc.returncode == -signal.SIGKILL, err
    assert _wait_until_ended([int(out.split()[0])], timeout=20) == []
    assert told.read_text() == f"stopped (its supervisor, process {proc.pid}, died)"


# The Python API: signals as the CLI handles them, the caller's handlers back after.

def test_hpo_run_gives_the_callers_signal_handlers_back(tiny_study, sqlite_url):
    import hpo

    def callers(signum, frame):  # pragma: no cover - never called
        pass

    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1)}
    hook = sys.unraisablehook
    try:
        signal.signal(signal.SIGTERM, callers)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)
        seen = []
        from hpo.trial import Objective

        train = Objective.__call__

        def training(self, trial, recorder=None):  # what is in place while a trial trains
            seen.append({s: signal.getsignal(s) for s in saved})
            return train(self, trial, recorder)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(Objective, "__call__", training)
            study = hpo.run(tiny_study, storage=sqlite_url, n_trials=1)
        assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE]
        [during] = seen
        assert during[signal.SIGTERM] is not callers  # hpo's, while it runs
        assert during[signal.SIGHUP] == signal.SIG_IGN  # ignored stays ignored
        assert during[signal.SIGUSR1] not in (signal.SIG_DFL, signal.SIG_IGN)
        assert signal.getsignal(signal.SIGTERM) is callers
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
        assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL
        assert sys.unraisablehook is hook
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


API_SCRIPT = """
import sys
import hpo
from hpo.errors import Stopped

try:
    hpo.run(sys.argv[1], storage=sys.argv[2], heartbeat=1)
except Stopped as stop:
    print(stop)
    sys.exit(stop.exit_code)
"""


def test_sigterm_during_hpo_run_fails_the_trial(tmp_path, image_folder):
    # The trial stayed RUNNING: hpo.run installed no handler, SIGTERM killed the script.
    study = write_study(tmp_path / "s.toml", data=image_folder, name="api", epochs=30)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    proc = subprocess.Popen([sys.executable, "-c", API_SCRIPT, str(study), storage],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=_only_sigint_ignored)
    victim = wait_for_training("api", storage, proc)
    proc.send_signal(signal.SIGTERM)
    out, err = ended(proc, 60)
    assert (proc.returncode, out.strip()) == (143, "stopped (SIGTERM)"), err
    trials = _trials("api", storage)
    assert trials[victim.number].state == TrialState.FAIL
    assert trials[victim.number].user_attrs["fail_reason"] == "stopped (SIGTERM)"
    assert not [t for t in trials if t.state == TrialState.RUNNING]


# Output that cannot be written: `hpo run | head`, quitting `less`, a hung-up terminal.

@pytest.mark.keras_backend("jax")  # the output's part, any backend (tests/conftest.py)
def test_hpo_run_into_a_pipe_closed_early_finishes_the_study(tmp_path, tiny_study):
    # The trial in flight failed with "BrokenPipeError" and the run exited 1, stderr empty.
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    proc = subprocess.Popen([sys.executable, "-m", "hpo", "run", "--study", str(tiny_study),
                             "--storage", storage, "--n-trials", "2"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = proc.stdout.readline()  # as `| head -1` does
    proc.stdout.close()
    err = proc.stderr.read()
    proc.wait(timeout=300)
    assert first.startswith("storage ")
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert err.count("standard output cannot be written") == 1, err
    [name] = optuna.get_all_study_names(storage)
    assert [t.state for t in _trials(name, storage)] == [TrialState.COMPLETE] * 2


@pytest.mark.parametrize("command", [["trials", "p"], ["studies"]])
def test_a_printing_command_into_a_closed_pipe_ends_quietly_with_141(tmp_path, command):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="p", storage=storage)
    study.add_trial(optuna.create_trial(
        params={"x": 1}, distributions={"x": optuna.distributions.IntDistribution(0, 2)},
        value=0.5))
    proc = subprocess.Popen([sys.executable, "-m", "hpo", *command, "--storage", storage],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    proc.stdout.close()  # the reader is gone before anything is printed
    err = proc.stderr.read()
    proc.wait(timeout=60)
    assert (proc.returncode, err) == (128 + signal.SIGPIPE, "")


class _ClosedPipe:
    """A stream whose reader went away."""

    def __init__(self) -> None:
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return True


def test_progress_that_cannot_be_written_is_dropped_with_one_warning(caplog):
    from types import SimpleNamespace

    from hpo.reporting import Reporter

    stream = _ClosedPipe()
    reporter = Reporter(metric="val_accuracy", stream=stream)
    trial = SimpleNamespace(number=0)
    with caplog.at_level("WARNING", logger="hpo"):
        reporter.info("study demo")
        reporter.epoch(trial, 1, 2, {"loss": 0.5}, 1.0)
        reporter.summary("best: trial 0")
    assert stream.writes == 1  # dropped after the first failure
    assert [r.getMessage() for r in caplog.records] == [
        ("the output stream ? cannot be written (BrokenPipeError: [Errno 32] Broken pipe): "
         "progress is no longer printed there; the run goes on")]


EMBEDDED_SCRIPT = """
import os, signal
from hpo.execution import worker_signals

caught = []
with worker_signals(embedded=True):
    try:
        os.kill(os.getpid(), signal.SIGINT)
        signal.pause()
    except KeyboardInterrupt:
        caught.append("first")
        try:  # the first stop is being handled (a trial's FAIL being written)
            os.kill(os.getpid(), signal.SIGINT)
            signal.pause()
        except KeyboardInterrupt:
            caught.append("second")
print(",".join(caught))
"""


def test_a_second_ctrl_c_in_hpo_run_never_ends_the_callers_interpreter():
    """hpo.run in a notebook: interrupting twice raises KeyboardInterrupt twice, as Python
    does; the CLI's 'second Ctrl-C ends at once' would kill the kernel and its state."""
    done = subprocess.run([sys.executable, "-c", EMBEDDED_SCRIPT], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "first,second"


def test_a_stream_given_up_on_never_silences_a_later_one_at_its_address():
    """A dropped stream without a descriptor (an in-process caller's captured output) is
    given up on by identity; once collected, a new stream may get its address, and must
    still be written (before, the CLI's next error line went nowhere: a test's flake)."""
    import io

    from hpo.reporting import drop_stream, write_or_drop

    reused = 0
    for _ in range(50):
        dropped = io.StringIO()
        drop_stream(dropped)
        assert not write_or_drop(dropped, "x")
        address = id(dropped)
        del dropped  # freed at once (no cycle): no gc.collect, which took 0.2 s a turn
        fresh = [io.StringIO() for _ in range(20)]
        reused += any(id(stream) == address for stream in fresh)
        for stream in fresh:
            assert write_or_drop(stream, "said"), f"a new stream at {address:#x} was silent"
            assert stream.getvalue() == "said"
    assert reused, "no new stream took a dropped one's address: this test checked nothing"
