"""A reused model keeps its compiled JAX steps across trials only when its training is then
exactly that of fresh steps; the NaN guard still stops a run with kept steps.

Run in a subprocess with ``KERAS_BACKEND=jax`` (the suite's own backend is TensorFlow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import json
    import keras
    import numpy as np
    from hpo.trial._callbacks import NanGuard, NonFiniteLossError
    from hpo.trial._reuse import CompiledSteps

    rng = np.random.default_rng(0)
    x = rng.random((64, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 3, 64)

    def build():
        keras.utils.set_random_seed(1)
        return keras.Sequential([
            keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.Flatten(), keras.layers.Dropout(0.3),
            keras.layers.Dense(3, activation="softmax")])

    def train(model, steps, optimizer):
        keras.utils.set_random_seed(2)
        reused = steps.compile(model, optimizer, loss="sparse_categorical_crossentropy",
                               metrics=["accuracy"])
        history = model.fit(x, y, batch_size=16, epochs=2, validation_data=(x, y),
                            verbose=0, callbacks=[NanGuard()]).history
        return reused, [w.tolist() for w in model.get_weights()], history

    out = {}
    model, steps = build(), CompiledSteps()
    initial = [v.numpy() for v in model.variables]  # weights and the dropout's seed state

    def reset(model):
        for variable, value in zip(model.variables, initial):
            variable.assign(value)
    train(model, steps, keras.optimizers.Adam(1e-3))
    first = id(model.train_function)  # not the function: see CompiledSteps' note
    reset(model)
    out["same_optimizer_new_rate"] = train(model, steps, keras.optimizers.Adam(1e-2))
    out["kept_function"] = id(model.train_function) == first
    reset(model)
    out["other_setting"] = train(model, steps, keras.optimizers.Adam(1e-2, beta_1=0.5))
    fresh = build()
    out["fresh_same"] = train(fresh, CompiledSteps(), keras.optimizers.Adam(1e-2))
    fresh = build()
    out["fresh_other"] = train(fresh, CompiledSteps(), keras.optimizers.Adam(1e-2, beta_1=0.5))
    reset(model)
    try:
        steps.compile(model, keras.optimizers.SGD(0.01), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        model.fit(np.full_like(x, np.nan), y, batch_size=16, epochs=5, verbose=0, callbacks=[NanGuard()])
        out["nan"] = "not stopped"
    except NonFiniteLossError as exc:
        out["nan"] = str(exc)
    print(json.dumps(out))
""")


def test_kept_steps_train_exactly_as_fresh_ones_and_nan_still_stops(tmp_path):
    pytest.importorskip("jax", reason="JAX is not installed (pip install '.[jax]')")
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    reused, weights, history = out["same_optimizer_new_rate"]
    assert reused and out["kept_function"]  # only the learning rate changed: steps kept
    assert (weights, history) == tuple(out["fresh_same"][1:])  # bit for bit a fresh run's
    assert not out["other_setting"][0]  # beta_1 is traced into the step: compiled afresh
    assert out["other_setting"][1:] == out["fresh_other"][1:]
    assert out["nan"].startswith("loss became")
