"""Compiled steps reused across trials train exactly as freshly compiled ones
(hpo.trial._steps), on each backend: in this process when it is the backend its Keras holds
(TensorFlow, unless KERAS_BACKEND says otherwise), else in one child interpreter per test
run, which also checks the JAX hazard below; its answer is shared by the tests that read it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import built_once, fast_xla_flags

# Trials of one model shape, in order: (optimizer, learning rate, internals), on a pool of
# two models per shape. Two optimizers alternating (each keeps its compiled model: the
# third trial reuses the first's steps), internals changed between trials (beta_1, rho,
# momentum: the least recently used model is compiled again), reused steps at a new batch
# size (the fifth).
# Six trials (each trained twice: on the pool's model and on a fresh one) keep the test's
# cost down on 2 cores; every kind of change is in them once.
_TRIALS = [
    ("Adam", 0.01, {}),
    ("SGD", 0.05, {"momentum": 0.9}),
    ("Adam", 0.003, {}),
    ("Adam", 0.01, {"beta_1": 0.5}),
    ("Adam", 0.02, {"beta_1": 0.5}),
    ("RMSprop", 0.01, {"rho": 0.8}),
]

_SCRIPT = textwrap.dedent("""
    import json, os, sys, tempfile
    import keras
    import numpy as np
    from hpo.models import build_model
    from hpo.trial._device import enable_compile_cache
    from hpo.trial._reuse import ModelPool
    from hpo.trial._steps import compile_model, prepare_steps, steps_key

    trials = json.loads(sys.argv[1])
    from pathlib import Path
    enable_compile_cache(Path(tempfile.mkdtemp()))  # a fresh compile fetches one made
    rng = np.random.default_rng(0)
    x = rng.random((32, 16, 16, 1), dtype=np.float32)
    y = rng.integers(0, 3, 32)

    def build():
        keras.backend.clear_session(free_memory=False)
        return build_model("small_cnn", input_shape=(16, 16, 1), num_classes=3,
                           dense_units=8, dropout=0.3)

    def train(model, batch_size):
        history = model.fit(x, y, batch_size=batch_size, epochs=2, shuffle=False,
                            validation_data=(x[:8], y[:8]), verbose=0)
        return {"history": history.history,
                "weights": [w.tolist() for w in model.get_weights()]}

    pool, results = ModelPool(keys=2, per_key=2), []
    for seed, (optimizer, lr, internals) in enumerate(trials):
        batch = 16 if seed == 4 else 8  # a new input shape on reused steps
        keras.utils.set_random_seed(seed)
        warm = pool.compiled("shape", steps_key(optimizer, internals), batch)
        model, _ = pool.acquire("shape", build, steps_key(optimizer, internals))
        reused, traced = prepare_steps(pool, model, optimizer, lr, internals,
                                       batch_size=batch)
        kept = train(model, batch)
        pool.release(model)
        keras.utils.set_random_seed(seed)
        fresh = build()
        compile_model(fresh, optimizer, lr, internals)
        results.append({"reused": reused, "traced": traced, "warm": warm, "kept": kept,
                        "fresh": train(fresh, batch)})

    # several steps per compiled call (30 images in batches of 8: the last call of an epoch
    # runs fewer steps, the last step a smaller batch), fed as hpo feeds them, with hpo's
    # callbacks at epoch ends: the same history and weights as one step per call
    from hpo.data import ArrayBatches
    from hpo.trial._callbacks import EpochRecorder
    images = rng.integers(0, 256, (30, 16, 16, 1), dtype=np.uint8)
    labels = rng.integers(0, 3, 30)
    per_execution = {}
    for steps in (1, 3):
        keras.utils.set_random_seed(7)
        model = build()
        compile_model(model, "Adam", 0.01, {}, steps_per_execution=steps)
        recorder = EpochRecorder(None, 3)
        model.fit(ArrayBatches(images, labels, batch_size=8, shuffle=True, seed=7),
                  validation_data=ArrayBatches(images[:12], labels[:12], batch_size=8,
                                               shuffle=False),
                  epochs=3, verbose=0, callbacks=[recorder])
        per_execution[steps] = {"history": recorder.history,
                                "weights": [w.tolist() for w in model.get_weights()]}
    print(json.dumps({"trials": results, "per_execution": per_execution}))
""")


def _answers(output: str) -> list:
    """The JSON lines a script printed last (one per script)."""
    return [json.loads(line) for line in output.splitlines()
            if line.startswith("{") or line in ("true", "false")]


def _exec_script_here(script: str, temp: Path) -> list:
    """``script`` in this process, as ``python -c script TRIALS`` runs it, its temporary
    folders in ``temp``."""
    import contextlib
    import io
    import tempfile

    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(printed):
        patch.setattr(sys, "argv", ["-c", json.dumps(_TRIALS)])
        patch.setattr(tempfile, "tempdir", str(temp))
        exec(compile(script, "<test_steps script>", "exec"), {"__name__": "__main__"})
    return _answers(printed.getvalue())


def _exec_script_in_child(backend: str, script: str, temp: Path) -> list:
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "TMPDIR": str(temp)}
    if backend == "jax":  # both sides of each comparison compile alike
        env["XLA_FLAGS"] = fast_xla_flags()
    done = subprocess.run([sys.executable, "-c", script, json.dumps(_TRIALS)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return _answers(done.stdout)


def _ran(backend: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """What :data:`_SCRIPT` printed on ``backend`` (and, on JAX, :data:`_HAZARD`: a
    ``hazard`` key)."""
    import keras

    if keras.backend.backend() == backend:
        (ran,) = _exec_script_here(_SCRIPT, tmp_path_factory.mktemp("steps"))
        return ran

    def build(folder: Path) -> None:
        scripts = _SCRIPT + (_HAZARD if backend == "jax" else "")
        answers = _exec_script_in_child(backend, scripts, folder)
        if backend == "jax":
            answers[0]["hazard"] = answers[1]
        (folder / "ran.json").write_text(json.dumps(answers[0]))

    folder = built_once(tmp_path_factory, f"steps-{backend}", build)
    return json.loads((folder / "ran.json").read_text())


@pytest.mark.parametrize("backend", ["jax", "tensorflow"])
def test_a_trial_on_reused_steps_trains_exactly_as_a_fresh_compile(backend, tmp_path_factory):
    pytest.importorskip(backend)
    ran = _ran(backend, tmp_path_factory)
    results = ran["trials"]
    # an idle model compiled under the same optimizer and internals: steps kept; else a
    # new model while the pool has room (the second), else the least recently used one
    # compiled again (the fourth: the SGD model; the sixth: the first Adam model)
    assert [r["reused"] for r in results] == [False, False, True, False, True, False]
    # at a batch size those steps trained at before (the third): nothing left to compile;
    # the pool said so before the trial took the model
    assert [r["traced"] for r in results] == [False, False, True, False, False, False]
    assert [r["warm"] for r in results] == [r["traced"] for r in results]
    for (optimizer, lr, internals), result in zip(_TRIALS, results):
        assert result["kept"]["history"] == result["fresh"]["history"], (optimizer, lr,
                                                                         internals)
        assert result["kept"]["weights"] == result["fresh"]["weights"], (optimizer, lr,
                                                                         internals)
    one, three = ran["per_execution"]["1"], ran["per_execution"]["3"]
    assert len(one["history"]["loss"]) == 3 and "val_accuracy" in one["history"]
    assert three["history"] == one["history"]
    assert three["weights"] == one["weights"]


_HAZARD = textwrap.dedent("""
    import json, sys
    import keras
    import numpy as np
    from hpo.models import build_model
    from hpo.trial._steps import compile_model

    rng = np.random.default_rng(0)
    x = rng.random((32, 16, 16, 1), dtype=np.float32)
    y = rng.integers(0, 3, 32)

    def model():
        keras.utils.set_random_seed(1)
        return build_model("small_cnn", input_shape=(16, 16, 1), num_classes=3,
                           dense_units=8)

    def weights(m):
        m.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
        return [w.tolist() for w in m.get_weights()]

    same = model()
    compile_model(same, "Adam", 0.05, {"beta_1": 0.9})
    weights(same)
    old = same.train_function  # a live reference to the old trace, as the hazard needs
    start = [v.numpy() if hasattr(v, "numpy") else np.asarray(v) for v in model().weights]
    same.set_weights(start)
    compile_model(same, "Adam", 0.05, {"beta_1": 0.1})
    recompiled = weights(same)
    fresh = model()
    compile_model(fresh, "Adam", 0.05, {"beta_1": 0.1})
    print(json.dumps(recompiled == weights(fresh)))
""")


def test_a_model_compiled_again_with_another_beta_1_does_not_train_with_the_old_trace(
        tmp_path_factory):
    """Keras 3.15 on JAX caches ``jit(model.train_step)`` on the bound method: without
    hpo's fresh step functions the recompiled model trains with beta_1 = 0.9. Checked in
    the JAX child interpreter of the test above (:func:`_ran`), after its trials."""
    pytest.importorskip("jax")
    import keras

    if keras.backend.backend() == "jax":
        assert _exec_script_here(_HAZARD, tmp_path_factory.mktemp("hazard")) == [True]
        return
    assert _ran("jax", tmp_path_factory)["hazard"] is True
