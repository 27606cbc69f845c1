"""Model architectures, one builder per file, looked up by name.

The registry holds only metadata (no Keras import), so that loading and validating a study
file stays fast; :func:`build_model` imports the one builder it needs.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hpo.errors import ModelError

if TYPE_CHECKING:
    import keras

__all__ = ["ModelSpec", "MODELS", "get_model_spec", "check_weights", "build_model"]


@dataclass(frozen=True)
class ModelSpec:
    """What ``hpo`` knows about one architecture without importing Keras.

    Attributes:
        name: The name used in study files (``architecture = "alexnet"``).
        module: The module under ``hpo.models`` holding ``build(...)``.
        hyperparameters: Names of the model hyperparameters ``build`` accepts, with defaults.
        default_image_size: (height, width) used when the study does not say.
        min_image_size: The smallest (height, width) the architecture accepts.
        transfer: Whether the model can start from pretrained ImageNet weights.
        description: One line for ``hpo space`` and the docs.
        weights_file: File name of the headless ImageNet weights in the Keras cache.
    """

    name: str
    module: str
    hyperparameters: dict[str, Any]
    default_image_size: tuple[int, int]
    min_image_size: tuple[int, int]
    transfer: bool
    description: str
    weights_file: str = ""


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="alexnet",
            module="alexnet",
            hyperparameters={"dense_units": 4096, "dropout": 0.0},
            default_image_size=(227, 227),
            min_image_size=(67, 67),
            transfer=False,
            description="The thesis's AlexNet variant with BatchNorm, trained from scratch.",
        ),
        ModelSpec(
            name="inception_v3",
            module="inception_v3",
            hyperparameters={"trainable_fraction": 1.0, "dropout": 0.0, "dense_units": 0},
            default_image_size=(299, 299),
            min_image_size=(75, 75),
            transfer=True,
            description="Keras InceptionV3 (ImageNet transfer) with a new softmax head.",
            weights_file="inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
        ),
        ModelSpec(
            name="vgg16",
            module="vgg16",
            hyperparameters={"trainable_fraction": 1.0, "dropout": 0.7, "dense_units": 1024},
            default_image_size=(128, 128),
            min_image_size=(32, 32),
            transfer=True,
            description="Keras VGG16 (ImageNet transfer), head Dense(1024)-Dropout(0.7) (seed 001).",
            weights_file="vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
        ),
        ModelSpec(
            name="resnet50",
            module="resnet50",
            hyperparameters={"trainable_fraction": 1.0, "dropout": 0.0, "dense_units": 0},
            default_image_size=(224, 224),
            min_image_size=(32, 32),
            transfer=True,
            description="Keras ResNet50 (ImageNet transfer), Flatten and a softmax head (seed 003).",
            weights_file="resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
        ),
        ModelSpec(
            name="small_cnn",
            module="small_cnn",
            hyperparameters={"conv_blocks": 1, "filters": 32, "dense_units": 128, "dropout": 0.0,
                             "batch_norm": False},
            default_image_size=(32, 32),
            min_image_size=(8, 8),
            transfer=False,
            description="Seed 002's CIFAR-10 CNN: Conv(32)-MaxPool-Dense(128), deeper on request.",
        ),
        ModelSpec(
            name="fashion_cnn",
            module="fashion_cnn",
            hyperparameters={"hidden_layers": "50-50", "dropout": 0.5},
            default_image_size=(28, 28),
            min_image_size=(16, 16),
            transfer=False,
            description="Seed 004's Fashion-MNIST CNN with a choice of hidden dense layers.",
        ),
    )
}


def get_model_spec(name: str) -> ModelSpec:
    """Returns the spec of architecture ``name``.

    Raises:
        ModelError: ``name`` is not a known architecture.
    """
    try:
        return MODELS[name]
    except KeyError:
        raise ModelError(
            f"unknown architecture {name!r}; expected one of {', '.join(sorted(MODELS))}"
        ) from None


def check_weights(name: str, weights: str) -> None:
    """Checks, without Keras, that ``name`` can get the ``weights`` the study asks for.

    Raises:
        ModelError: The weights file is missing, or weights are given to a scratch model.
    """
    spec = get_model_spec(name)
    if spec.transfer:
        from hpo.models._weights import resolve_weights

        resolve_weights(name, weights, spec.weights_file)
    elif weights not in ("none", ""):
        raise ModelError(
            f"architecture {name!r} is trained from scratch and takes no weights "
            f"(received {weights!r}); remove 'weights' from [architectures.{name}]"
        )


def build_model(
    name: str,
    *,
    input_shape: tuple[int, int, int],
    num_classes: int,
    weights: str = "none",
    **hyperparameters: Any,
) -> "keras.Model":
    """Builds architecture ``name`` for images of ``input_shape`` and ``num_classes`` classes.

    Args:
        name: An architecture in :data:`MODELS`.
        input_shape: (height, width, channels) of the images fed to the model.
        num_classes: Size of the softmax output.
        weights: ``"none"``, ``"imagenet"`` or a path to a weights file (transfer models).
        **hyperparameters: Flat model hyperparameters; unknown ones raise.

    Raises:
        ModelError: Unknown architecture or hyperparameter, input too small, weights missing.
    """
    spec = get_model_spec(name)
    unknown = sorted(set(hyperparameters) - set(spec.hyperparameters))
    if unknown:
        raise ModelError(
            f"architecture {name!r} does not take {', '.join(unknown)}; "
            f"it takes {', '.join(sorted(spec.hyperparameters)) or 'no hyperparameters'}"
        )
    height, width, _ = input_shape
    min_h, min_w = spec.min_image_size
    if height < min_h or width < min_w:
        raise ModelError(
            f"image size {height}x{width} is too small for {name!r}, which needs at least "
            f"{min_h}x{min_w}; set image_size in the study's [architectures.{name}] section"
        )
    check_weights(name, weights)
    if spec.transfer:
        hyperparameters["weights"] = weights
    module = importlib.import_module(f"hpo.models.{spec.module}")
    merged = {**spec.hyperparameters, **hyperparameters}
    return module.build(input_shape=input_shape, num_classes=num_classes, **merged)
