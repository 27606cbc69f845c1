"""Reusing a built model across trials, with exactly the initial weights a fresh build has.

Building a Keras model is costly for what it does: the thesis's AlexNet took 3.6 s per
trial on an H100 host and 2.6-2.8 s on an H200 (the snapshot below included), more than
its GPU work; both with a builder that rebuilt the graph at every ``Sequential.add``, as
the builders no longer do. Most trials of a grid differ only in optimizer, learning rate,
batch size and epochs, none of which changes the model. :class:`ModelPool` builds a model
once per *shape key* (architecture, input shape, classes, weights, precision and the
model's own parameters) and, for the next trial with the same key, resets it to the
weights a fresh build under that trial's seed would have had.

How the reset reproduces a fresh build exactly. A trial seeds Python's ``random`` (through
``keras.utils.set_random_seed``) and then builds; every random initializer and every
``SeedGenerator`` (dropout) of a Keras 3 model takes its seed from
``random.randint(1, 10**9)`` when it is constructed, and its values are a pure function of
that integer. At the first build the pool finds *which* draw each of them took (it replays
the draws from the state before the build and matches the seeds), recomputes every
initializer once to tell drawn weights from loaded ones (pretrained backbones, or anything
an initializer does not reproduce), and keeps a host copy of the loaded ones. A reset then
makes the same draws from the new seed, gives each initializer its draw, recomputes the
drawn weights, restores the loaded ones and leaves Python's ``random`` in the state a build
would have left it in. Anything the pool cannot account for (a variable without a matching
initializer, an initializer with a fixed seed generator, draws it cannot replay) makes the
model single-use: it is built fresh for every trial, as before, never reset approximately.
``tests/test_models.py`` checks reset == fresh build, variable by variable.
"""

from __future__ import annotations

import logging
import random
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import keras

__all__ = ["ModelPool", "Resettable", "make_resettable"]

_log = logging.getLogger(__name__)
_MAX_DRAWS = 100_000  # far above any model's count of seeded objects
_KERAS_SEED_RANGE = (1, int(1e9))  # keras.src.random.seed_generator.make_default_seed


@dataclass
class Resettable:
    """A built model and what it takes to give it a fresh build's weights for any seed."""

    model: "keras.Model"
    draws: int
    drawn: list[tuple[Any, Any, int]] = field(default_factory=list)  # variable, init, draw
    generators: list[tuple[Any, int]] = field(default_factory=list)  # state variable, draw
    loaded: list[tuple[Any, np.ndarray]] = field(default_factory=list)  # variable, value
    #: The model's compiled optimizer and steps (:class:`hpo.trial._steps.CompiledSteps`),
    #: set by the trial that compiled it; None before.
    steps: Any = None

    def reset(self) -> None:
        """Gives the model the weights a fresh build would have after the caller's
        ``keras.utils.set_random_seed(seed)``, consuming the same Python random draws."""
        values = [random.randint(*_KERAS_SEED_RANGE) for _ in range(self.draws)]
        for variable, initializer, index in self.drawn:
            initializer.seed = values[index]
            variable.assign(initializer(tuple(variable.shape), dtype=variable.dtype))
        for state, index in self.generators:
            state.assign(np.asarray([values[index], 0], dtype=state.dtype))
        for variable, value in self.loaded:
            variable.assign(value)


def _layers(model: "keras.Model") -> list[Any]:
    """Every layer of ``model``, nested models' layers included, in order."""
    found: list[Any] = []
    for layer in model.layers:
        found.append(layer)
        if hasattr(layer, "layers"):
            found.extend(_layers(layer))
    return found


def _initialized(layer: Any) -> list[tuple[Any, Any]]:
    """(variable, initializer) pairs of ``layer``: ``kernel_initializer`` -> ``kernel``, as
    Keras names them (``depthwise_initializer`` -> ``depthwise_kernel``)."""
    import keras

    pairs = []
    for name, value in vars(layer).items():
        if not name.endswith("_initializer") or not isinstance(
                value, keras.initializers.Initializer):
            continue
        stem = name[: -len("_initializer")]
        for candidate in (stem, f"_{stem}", f"{stem}_kernel", f"_{stem}_kernel"):
            variable = getattr(layer, candidate, None)
            if isinstance(variable, keras.Variable):
                pairs.append((variable, value))
                break
    return pairs


def make_resettable(model: "keras.Model", state_before: Any) -> Resettable | None:
    """Works out how to reset ``model``, just built from Python random state
    ``state_before``; None when it cannot be reset exactly (then it is not reused)."""
    import keras

    replay = random.Random()
    replay.setstate(state_before)
    after = random.getstate()
    draws: list[int] = []
    while replay.getstate() != after:
        if len(draws) >= _MAX_DRAWS:
            _single_use(model, "its build drew random numbers hpo cannot replay")
            return None
        draws.append(replay.randint(*_KERAS_SEED_RANGE))
    index = {value: i for i, value in enumerate(draws)}
    if len(index) != len(draws):
        _single_use(model, "two seeded objects drew the same seed")
        return None
    resettable = Resettable(model=model, draws=len(draws))
    covered: set[int] = set()
    for layer in _layers(model):
        for variable, initializer in _initialized(layer):
            if id(variable) in covered:
                continue
            covered.add(id(variable))
            seed = getattr(initializer, "seed", None)
            if seed is not None and not isinstance(seed, int):
                _single_use(model, f"{layer.name} has an initializer with a fixed "
                                   "seed generator")
                return None
            current = keras.ops.convert_to_numpy(variable.value)
            fresh = keras.ops.convert_to_numpy(
                initializer(tuple(variable.shape), dtype=variable.dtype))
            if seed is not None and seed in index and np.array_equal(current, fresh):
                resettable.drawn.append((variable, initializer, index[seed]))
            else:  # loaded (pretrained) or constant: restored as built
                resettable.loaded.append((variable, current))
        for value in vars(layer).values():
            if isinstance(value, keras.random.SeedGenerator):
                seed = int(keras.ops.convert_to_numpy(value.state.value)[0])
                if seed not in index:
                    _single_use(model, f"{layer.name} has a seed generator with a "
                                       "fixed seed")
                    return None
                covered.add(id(value.state))
                resettable.generators.append((value.state, index[seed]))
    missing = [v.path for v in model.variables if id(v) not in covered]
    if missing:
        _single_use(model, f"no initializer known for {', '.join(missing[:3])}")
        return None
    return resettable


def _single_use(model: "keras.Model", why: str) -> None:
    _log.debug("model %s is rebuilt for every trial: %s", model.name, why)


class ModelPool:
    """Built models kept between trials, at most ``keys`` shape keys and ``per_key`` models
    each (least recently used first out). Thread-safe: a model saved in the background is
    given back when its save is done.

    A model keeps the optimizer and compiled steps its last trial compiled
    (:mod:`hpo.trial._steps`). A trial whose steps key no idle model holds gets a new model
    while the pool has room for one more of its shape key, rather than recompiling an idle
    one (which would throw away that one's compiled steps): a grid that alternates three
    optimizers keeps three compiled models and compiles each optimizer's steps once. Past
    ``per_key`` models, or past ``max_bytes`` of idle weights and optimizer state, the
    least recently used idle model is recompiled instead, and one released over the limit
    is dropped (the first idle model of a key is always kept, as before).

    Args:
        keys: Shape keys kept (a grid over two architectures alternates between two).
        per_key: Models kept per shape key, idle or in use (one may be saving while the
            next trains).
        max_bytes: Idle models' variables (weights and optimizer state) kept at most, past
            each key's first: a worker's pool must not crowd out its GPU's training memory
            (VGG16 with Adam holds about 1.6 GB per model).
    """

    def __init__(self, keys: int = 2, per_key: int = 4, max_bytes: int = 2 * 2**30) -> None:
        self._keys = keys
        self._per_key = per_key
        self._max_bytes = max_bytes
        self._idle: OrderedDict[Hashable, list[Resettable]] = OrderedDict()
        self._owned: dict[int, tuple[Hashable, Resettable]] = {}
        self._held: set[int] = set()
        self._lock = threading.Lock()
        #: Builds and reuses so far, for the trial's records and the benchmarks.
        self.builds = 0
        self.reuses = 0

    def _count(self, key: Hashable) -> int:
        """Models of ``key`` the pool knows: idle, in use or being saved (under the lock)."""
        return len(self._idle.get(key, ())) + sum(
            1 for owner, _ in self._owned.values() if owner == key)

    def acquire(self, key: Hashable, build: Callable[[], "keras.Model"],
                steps_key: Hashable = None) -> tuple["keras.Model", bool]:
        """A model for ``key`` with a fresh build's weights under the seed just set (call
        right after ``keras.utils.set_random_seed``); returns it and whether it was reused.
        An idle model compiled under ``steps_key`` is taken first, then one whose steps
        nobody recorded; without either, a new model is built while the pool has room for
        it, else the least recently used idle model is taken (and compiled again by the
        trial).
        """
        with self._lock:
            idle = self._idle.get(key)
            entry = None
            if idle:
                matching = [i for i, e in enumerate(idle)
                            if e.steps is not None and e.steps.key == steps_key]
                uncompiled = [i for i, e in enumerate(idle) if e.steps is None]
                if matching or uncompiled:  # nothing compiled is lost by taking it
                    entry = idle.pop((matching or uncompiled)[-1])
                elif self._count(key) >= self._per_key:
                    entry = idle.pop(0)
        if entry is not None:
            entry.reset()
            with self._lock:
                self._owned[id(entry.model)] = (key, entry)
                self.reuses += 1
            return entry.model, True
        state = random.getstate()
        model = build()
        resettable = make_resettable(model, state)
        with self._lock:
            self.builds += 1
            if resettable is not None:
                self._owned[id(model)] = (key, resettable)
        return model, False

    def compiled(self, key: Hashable, steps_key: Hashable, batch_size: int) -> bool:
        """Whether an idle model of shape ``key`` holds steps compiled under ``steps_key``
        that have trained at ``batch_size`` (a trial taking it compiles nothing)."""
        with self._lock:
            return any(e.steps is not None and e.steps.key == steps_key
                       and batch_size in e.steps.batch_sizes
                       for e in self._idle.get(key, ()))

    def entry(self, model: "keras.Model") -> Resettable | None:
        """The pool's record of ``model`` (where its compiled steps are kept), or None for
        a single-use model."""
        with self._lock:
            owned = self._owned.get(id(model))
        return owned[1] if owned is not None else None

    def hold(self, model: "keras.Model") -> None:
        """Keeps ``model`` out of the pool until ``release(model, held=True)`` (its save)."""
        with self._lock:
            self._held.add(id(model))

    def release(self, model: "keras.Model", *, held: bool = False) -> None:
        """Gives ``model`` back for later trials (a single-use model is dropped); a held
        model only when its holder releases it."""
        with self._lock:
            if held:
                self._held.discard(id(model))
            elif id(model) in self._held:
                return
            owned = self._owned.pop(id(model), None)
            if owned is None:
                return
            key, entry = owned
            idle = self._idle.setdefault(key, [])
            self._idle.move_to_end(key)
            idle.append(entry)  # the most recently used last
            while len(idle) > self._per_key or (
                    len(idle) > 1 and self._idle_bytes() > self._max_bytes):
                idle.pop(0)
            while len(self._idle) > self._keys:
                self._idle.popitem(last=False)

    def _idle_bytes(self) -> int:
        """Bytes of the idle models' variables past each key's first (under the lock)."""
        return sum(_bytes(e.model) for idle in self._idle.values() for e in idle[1:])

    def clear(self) -> None:
        """Drops every idle model (before a process execs itself, say)."""
        with self._lock:
            self._idle.clear()


def _bytes(model: "keras.Model") -> int:
    """Bytes of ``model``'s variables and its optimizer's (weights and slots)."""
    optimizer = getattr(model, "optimizer", None)
    variables = [*model.variables, *(getattr(optimizer, "variables", None) or [])]
    return sum(int(np.prod(v.shape)) * _itemsize(str(v.dtype)) for v in variables)


def _itemsize(dtype: str) -> int:
    """Bytes per element of a Keras dtype name (``float32``, ``bfloat16``, ``uint8``, ...):
    numpy's, with the types ml_dtypes gives numpy (``bfloat16``, the float8s: Keras's own
    dependency). Imported here, not with the module: its import takes 1.4 s of CPU, which
    every ``hpo`` command that trains nothing (``hpo studies``, a refused run) would pay;
    a process that holds a model has imported it already, with Keras."""
    import ml_dtypes

    return int(np.dtype(getattr(ml_dtypes, dtype, dtype)).itemsize)
