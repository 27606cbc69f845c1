"""Compiled train and test steps reused across trials, and the seconds a trial compiles.

A Keras model's ``train_function`` is made at its first ``fit`` after ``compile()`` (which
resets it): on JAX a new ``jax.jit`` of ``model.train_step``, on TensorFlow a new
``tf.function``; either traces, lowers and compiles (or fetches from the compile cache) its
program again, for every trial, although the model pool (:mod:`hpo.trial._reuse`) hands
the next trial the same model. Here a model keeps its compiled optimizer and steps from
trial to trial while its *steps key* stays the same, and is not compiled again: its
optimizer's variables are reset to the values a fresh build gives them and the trial's
learning rate (an optimizer variable, read by the step at run time) is assigned.

The steps key holds everything the step's trace depends on apart from the variables' shapes
(the model's shape key, kept by the pool): the optimizer's class, every optimizer internal
(``beta_1``, ``rho``, ``momentum``, ``epsilon``, ``amsgrad``, ...: Keras 3 keeps them as
Python numbers, baked into the trace as constants, and some choose a code path, as
``if self.momentum != 0`` in SGD) and steps per execution. The batch size is not in it: a
new batch size is a new input shape, which the same jit or ``tf.function`` traces anew on
its own. Only the learning rate changes the step's numbers without changing its trace.

The hazard this guards against (Keras 3.15 on JAX): ``jit(model.train_step)`` is cached by
JAX on the *bound method*, which compares equal for the same model; a model compiled again
with a changed ``beta_1`` while any reference to its old ``train_function`` lived trained
silently with the old trace. So every ``compile()`` hpo makes on JAX gives the model new
step functions (closures, distinct objects) before anything traces them, and a model is
never compiled again under a changed internal without that: a different steps key means a
fresh compile with fresh step functions. ``tests/test_steps.py`` checks that a trial on
reused steps trains exactly as a fresh model does (weights and history), for several
optimizers with their internals changed between trials, and the hazard itself.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

if TYPE_CHECKING:
    import keras

    from hpo.trial._reuse import ModelPool

__all__ = ["CompiledSteps", "compile_model", "compile_seconds", "prepare_steps", "steps_key"]

_LOSS = "sparse_categorical_crossentropy"
_METRICS = ("accuracy",)


def steps_key(optimizer: str, internals: Mapping[str, Any],
              steps_per_execution: int = 1) -> Hashable:
    """What a compiled step's trace depends on besides the model's shape key: the optimizer
    class and every internal (not the learning rate, a variable), steps per execution."""
    from hpo.optimizers import canonical_optimizer

    return (canonical_optimizer(optimizer), repr(sorted(internals.items())),
            int(steps_per_execution))


@dataclass
class CompiledSteps:
    """A compiled model's optimizer state as a fresh compile leaves it, to reset it to."""

    key: Hashable
    initial: list[tuple[Any, Any]] = field(default_factory=list)  # variable, fill or array
    trials: int = 1  # trials trained on these steps, this one included
    #: Batch sizes these steps have trained at: each is an input shape the step's jit (or
    #: tf.function) has traced and compiled, a later trial at it compiles nothing.
    batch_sizes: set[int] = field(default_factory=set)

    def reset(self, model: "keras.Model", learning_rate: float) -> None:
        """Gives ``model``'s optimizer the state of a fresh compile under ``learning_rate``,
        keeping its compiled steps."""
        import keras

        for variable, value in self.initial:
            if isinstance(value, np.ndarray):
                variable.assign(value)
            else:
                variable.assign(keras.ops.full(tuple(variable.shape), value,
                                               dtype=variable.dtype))
        model.optimizer.learning_rate = float(learning_rate)
        model.stop_training = False
        self.trials += 1


def _fresh_step_functions(model: "keras.Model") -> None:
    """Gives ``model`` train/test/predict steps that are new function objects, so that JAX
    traces them anew (its trace cache is keyed on the function: on the bound method
    ``model.train_step`` it is the same key for every compile of the same model)."""
    from hpo.trial._device import backend

    if backend() != "jax":  # a new tf.function per compile: nothing shared between them
        return
    cls = type(model)

    def train_step(state: Any, data: Any) -> Any:
        return cls.train_step(model, state, data)

    def test_step(state: Any, data: Any) -> Any:
        return cls.test_step(model, state, data)

    def predict_step(state: Any, data: Any) -> Any:
        return cls.predict_step(model, state, data)

    for name, step in (("train_step", train_step), ("test_step", test_step),
                       ("predict_step", predict_step)):
        object.__setattr__(model, name, step)


def compile_model(model: "keras.Model", optimizer: str, learning_rate: float,
                  internals: Mapping[str, Any], *, steps_per_execution: int = 1
                  ) -> CompiledSteps:
    """Compiles ``model`` afresh (new optimizer, new step functions) and builds its
    optimizer; returns what it takes to reset that optimizer for a later trial."""
    from hpo.optimizers import build_optimizer

    model.compile(optimizer=build_optimizer(optimizer, learning_rate, **internals),
                  loss=_LOSS, metrics=list(_METRICS),
                  steps_per_execution=steps_per_execution)
    _fresh_step_functions(model)
    model.optimizer.build(model.trainable_variables)  # as fit's first call would
    return CompiledSteps(key=steps_key(optimizer, internals, steps_per_execution),
                         initial=_initial_state(model.optimizer))


def prepare_steps(pool: "ModelPool", model: "keras.Model", optimizer: str,
                  learning_rate: float, internals: Mapping[str, Any], *,
                  steps_per_execution: int = 1, batch_size: int | None = None
                  ) -> tuple[bool, bool]:
    """Gives ``model`` (from ``pool``) a fresh compile's optimizer state for a trial: by
    resetting its optimizer and keeping its compiled steps when it was last compiled under
    the same steps key, else by compiling it. Returns whether the steps were reused, and
    whether they had trained at ``batch_size`` before (then the trial compiles nothing)."""
    entry = pool.entry(model)
    key = steps_key(optimizer, internals, steps_per_execution)
    if entry is not None and entry.steps is not None and entry.steps.key == key:
        traced = batch_size in entry.steps.batch_sizes
        entry.steps.reset(model, learning_rate)
        if batch_size is not None:
            entry.steps.batch_sizes.add(batch_size)
        return True, traced
    steps = compile_model(model, optimizer, learning_rate, internals,
                          steps_per_execution=steps_per_execution)
    if batch_size is not None:
        steps.batch_sizes.add(batch_size)
    if entry is not None:
        entry.steps = steps
    return False, False


def _initial_state(optimizer: Any) -> list[tuple[Any, Any]]:
    """Each optimizer variable but the learning rate with its value now: a fill value
    where it is constant (zeros, an initial accumulator, a loss scale), else a copy."""
    import keras

    learning_rate = getattr(getattr(optimizer, "inner_optimizer", optimizer),
                            "_learning_rate", None)
    state = []
    for variable in optimizer.variables:
        if variable is learning_rate:
            continue
        value = keras.ops.convert_to_numpy(variable.value)
        flat = value.reshape(-1)
        if flat.size and np.all(flat == flat[0]):
            state.append((variable, flat[0].item()))
        else:
            state.append((variable, value.copy()))
    return state


class _CompileClock:
    """Seconds spent tracing, lowering and compiling (or fetching compiled programs from
    the persistent cache, inside the compile event) in this process, from JAX's
    ``jax.monitoring`` duration events ``/jax/core/compile/...``."""

    def __init__(self) -> None:
        self._seconds = 0.0
        self._lock = threading.Lock()
        self._installed = False

    def _listen(self, event: str, duration_secs: float, **_: str | int) -> None:
        if event.startswith("/jax/core/compile/"):
            with self._lock:
                self._seconds += duration_secs

    def seconds(self) -> float | None:
        """Compile seconds so far in this process; None where the backend reports none
        (TensorFlow exposes no duration of its tracing or XLA compiles)."""
        from hpo.trial._device import backend

        if backend() != "jax":
            return None
        if not self._installed:
            import jax.monitoring

            jax.monitoring.register_event_duration_secs_listener(self._listen)
            self._installed = True
        return self._seconds


_clock = _CompileClock()


def compile_seconds() -> float | None:
    """Seconds this process has spent compiling so far (JAX), or None (other backends);
    call it once before the first trial so that its count starts there."""
    return _clock.seconds()
