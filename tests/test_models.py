from __future__ import annotations

import keras
import numpy as np
import pytest

from hpo.errors import ModelError
from hpo.models import MODELS, build_model
from hpo.optimizers import OPTIMIZERS, build_optimizer, default_learning_rate


def test_thesis_alexnet_has_exactly_the_thesis_parameter_count():
    model = build_model("alexnet", input_shape=(227, 227, 3), num_classes=2)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    non_trainable = sum(int(np.prod(w.shape)) for w in model.non_trainable_weights)
    assert model.count_params() == 200_114_946
    assert trainable == 200_112_194
    assert non_trainable == 2_752
    keras.backend.clear_session()


@pytest.mark.parametrize("name, shape, classes", [
    ("small_cnn", (32, 32, 3), 10),
    ("fashion_cnn", (28, 28, 1), 10),
])
def test_small_models_predict_probabilities(name, shape, classes):
    model = build_model(name, input_shape=shape, num_classes=classes)
    out = model.predict(np.zeros((2, *shape), dtype=np.float32), verbose=0)
    assert out.shape == (2, classes)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)


def test_seed_002_base_model_matches_its_layers():
    model = build_model("small_cnn", input_shape=(32, 32, 3), num_classes=10)
    # Conv2D(32, 3x3) 896 + Dense(16*16*32 -> 128) 1,048,704 + Dense(128 -> 10) 1,290
    assert model.count_params() == 896 + 1_048_704 + 1_290


def test_transfer_model_without_weights_builds_with_a_new_head():
    model = build_model("inception_v3", input_shape=(75, 75, 3), num_classes=2, weights="none",
                        trainable_fraction=0.5)
    assert model.output_shape == (None, 2)
    backbone = model.get_layer("inception_v3")
    frozen = [layer for layer in backbone.layers if not layer.trainable]
    assert 0 < len(frozen) < len(backbone.layers)
    keras.backend.clear_session()


def test_imagenet_weights_never_download_and_say_where_to_put_them():
    with pytest.raises(ModelError, match="not in the Keras cache .*never downloads"):
        build_model("vgg16", input_shape=(32, 32, 3), num_classes=2, weights="imagenet")


def test_weights_from_a_local_file(tmp_path):
    source = keras.applications.VGG16(include_top=False, weights=None,
                                      input_shape=(32, 32, 3))
    path = tmp_path / "vgg16_notop.weights.h5"
    source.save_weights(path)
    model = build_model("vgg16", input_shape=(32, 32, 3), num_classes=2, weights=str(path))
    loaded = model.get_layer("vgg16").get_weights()[0]
    np.testing.assert_array_equal(loaded, source.get_weights()[0])
    with pytest.raises(ModelError, match="does not exist"):
        build_model("vgg16", input_shape=(32, 32, 3), num_classes=2,
                    weights=str(tmp_path / "missing.h5"))
    keras.backend.clear_session()


@pytest.mark.parametrize("call, fragment", [
    (lambda: build_model("lenet", input_shape=(8, 8, 1), num_classes=2), "unknown architecture"),
    (lambda: build_model("alexnet", input_shape=(32, 32, 3), num_classes=2), "too small"),
    (lambda: build_model("small_cnn", input_shape=(32, 32, 3), num_classes=2, depth=3),
     "does not take depth"),
    (lambda: build_model("alexnet", input_shape=(227, 227, 3), num_classes=2,
                         weights="imagenet"), "trained from scratch"),
])
def test_model_errors_say_what_was_received(call, fragment):
    with pytest.raises(ModelError, match=fragment):
        call()


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_every_thesis_optimizer_builds_with_its_learning_rate(name):
    optimizer = build_optimizer(name.lower(), 0.0123)
    assert type(optimizer).__name__ == name
    assert float(keras.ops.convert_to_numpy(optimizer.learning_rate)) == pytest.approx(0.0123)


def test_keras_default_learning_rates_are_the_thesis_baseline():
    assert default_learning_rate("SGD") == 0.01
    assert {default_learning_rate(n) for n in OPTIMIZERS if n != "SGD"} == {0.001}


def test_every_registered_model_has_a_builder():
    import importlib

    for spec in MODELS.values():
        assert callable(importlib.import_module(f"hpo.models.{spec.module}").build)


def _reuse_cases(tmp_path):
    vgg_weights = tmp_path / "vgg16_notop.weights.h5"
    keras.applications.VGG16(include_top=False, weights=None,
                             input_shape=(32, 32, 3)).save_weights(vgg_weights)
    return {
        # dropout (seed generators), batch norm (constant initializers), two conv blocks
        "small_cnn": ((16, 16, 3), {"conv_blocks": 2, "dropout": 0.3, "batch_norm": True}),
        "alexnet": ((67, 67, 3), {"dense_units": 32, "dropout": 0.5}),
        # a pretrained backbone (loaded weights) under a new, randomly initialised head
        "vgg16": ((32, 32, 3), {"weights": str(vgg_weights), "dense_units": 8}),
    }


@pytest.mark.parametrize("name", ["small_cnn", "alexnet", "vgg16"])
def test_a_reused_model_starts_from_exactly_a_fresh_builds_weights(name, tmp_path):
    import random

    from hpo.trial._reuse import ModelPool

    shape, kwargs = _reuse_cases(tmp_path)[name]

    def build():
        return build_model(name, input_shape=shape, num_classes=3, **kwargs)

    pool = ModelPool()
    keras.utils.set_random_seed(11)
    model, reused = pool.acquire("key", build)
    assert not reused
    x = np.random.default_rng(0).uniform(0, 255, (6, *shape)).astype("float32")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x, np.array([0, 1, 2, 0, 1, 2]), epochs=1, verbose=0)  # weights move
    pool.release(model)

    keras.utils.set_random_seed(23)
    again, reused = pool.acquire("key", build)
    state_after_reset = random.getstate()
    assert reused and again is model
    keras.utils.set_random_seed(23)
    fresh = build()
    assert random.getstate() == state_after_reset  # later draws of the trial unchanged
    assert len(again.variables) == len(fresh.variables)
    for mine, theirs in zip(again.variables, fresh.variables):
        np.testing.assert_array_equal(np.asarray(mine), np.asarray(theirs), err_msg=mine.path)
    if name == "vgg16":  # the backbone kept its pretrained weights, not a random draw
        source = keras.applications.VGG16(include_top=False, weights=None,
                                          input_shape=(32, 32, 3))
        source.load_weights(kwargs["weights"])
        np.testing.assert_array_equal(again.get_layer("vgg16").get_weights()[0],
                                      source.get_weights()[0])


def test_a_model_held_by_its_save_is_not_handed_out(tmp_path):
    from hpo.trial._reuse import ModelPool

    pool = ModelPool()

    def build():
        return build_model("fashion_cnn", input_shape=(28, 28, 1), num_classes=2)

    keras.utils.set_random_seed(1)
    first, _ = pool.acquire("key", build)
    pool.hold(first)  # being saved in the background
    pool.release(first)  # the trial ends: the save still has it
    second, reused = pool.acquire("key", build)
    assert second is not first and not reused
    pool.release(first, held=True)  # the save is done
    third, reused = pool.acquire("key", build)
    assert third is first and reused


def test_the_pool_keeps_a_compiled_model_per_optimizer_within_its_bounds():
    """A new optimizer gets a new model while the pool has room, so the models compiled
    under the others keep their steps; past ``per_key`` models the least recently used is
    compiled again; idle models past a shape's first are dropped beyond ``max_bytes``."""
    from hpo.trial._reuse import ModelPool
    from hpo.trial._steps import CompiledSteps

    def build():
        return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])

    def trial(pool, steps):  # as a trial does: take, compile under its steps key, give back
        model, _ = pool.acquire("shape", build, steps)
        entry = pool.entry(model)
        if entry.steps is None or entry.steps.key != steps:
            entry.steps = CompiledSteps(key=steps, batch_sizes={32})
        pool.release(model)
        return model

    pool = ModelPool(per_key=2)
    adam = trial(pool, "Adam")
    sgd = trial(pool, "SGD")
    assert sgd is not adam  # room for a second model: Adam's keeps its steps
    assert pool.compiled("shape", "Adam", 32) and not pool.compiled("shape", "Adam", 64)
    assert trial(pool, "Adam") is adam and trial(pool, "SGD") is sgd
    assert trial(pool, "RMSprop") is adam  # no room: the least recently used is recompiled
    assert not pool.compiled("shape", "Adam", 32)
    assert trial(pool, "SGD") is sgd

    frugal = ModelPool(per_key=4, max_bytes=0)  # only each shape's first idle model kept
    adam = trial(frugal, "Adam")
    sgd = trial(frugal, "SGD")
    assert trial(frugal, "SGD") is sgd  # the most recently used stays
    assert trial(frugal, "Adam") not in (adam, sgd)  # Adam's was dropped past the bytes


def test_the_pool_counts_each_dtype_at_its_size():
    from hpo.trial._reuse import _itemsize

    assert [_itemsize(d) for d in ("float32", "bfloat16", "float16", "uint8", "bool",
                                   "int64", "float8_e4m3fn")] == [4, 2, 2, 1, 1, 8, 1]
