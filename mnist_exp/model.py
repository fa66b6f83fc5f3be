"""Build and compile the Keras model described by the ``model`` and ``optimizer`` configs."""

from __future__ import annotations

import keras
from keras import layers
from omegaconf import DictConfig

# The only optimizer classes a config can name (never an arbitrary import path).
OPTIMIZER_CLASSES = {
    "adam": keras.optimizers.Adam,
    "adamw": keras.optimizers.AdamW,
    "sgd": keras.optimizers.SGD,
    "rmsprop": keras.optimizers.RMSprop,
}


def _placed(placement: str, index: int, depth: int) -> bool:
    """Whether hidden layer ``index`` (of ``depth``) gets a layer placed at ``placement``."""
    return placement == "all" or index == {"first": 0, "last": depth - 1}[placement]


def augmentation() -> list[keras.layers.Layer]:
    """Random shifts (10 %), rotations (±10°) and zoom (±10 %) of 28x28 images, taking
    and giving flat pixels. Keras applies them in training only: inference is unchanged."""
    return [
        layers.Reshape((28, 28, 1)),
        layers.RandomTranslation(0.1, 0.1, fill_mode="constant"),
        layers.RandomRotation(10 / 360, fill_mode="constant"),
        layers.RandomZoom(0.1, fill_mode="constant"),
        layers.Flatten(),
    ]


def build_model(
    model_cfg: DictConfig, input_dim: int = 784, num_classes: int = 10, augment: bool = False
) -> keras.Model:
    """Return the uncompiled MLP the config describes.

    Each hidden layer is Dense, then BatchNormalization and Dropout where placed; the
    output is Dense(num_classes, softmax). With ``augment``, :func:`augmentation` comes
    first (no weights: the parameter count is unchanged).
    """
    stack: list = [keras.Input(shape=(input_dim,)), *(augmentation() if augment else [])]
    depth = len(model_cfg.hidden_units)
    for index, units in enumerate(model_cfg.hidden_units):
        stack.append(layers.Dense(units, activation=model_cfg.activation))
        if model_cfg.batch_norm and _placed(model_cfg.batch_norm_layers, index, depth):
            stack.append(layers.BatchNormalization())
        if model_cfg.dropout > 0 and _placed(model_cfg.dropout_layers, index, depth):
            stack.append(layers.Dropout(model_cfg.dropout))
    stack.append(layers.Dense(num_classes, activation="softmax"))
    return keras.Sequential(stack, name=model_cfg.name)


def compile_model(
    model: keras.Model, optimizer_cfg: DictConfig, steps_per_execution: int = 1
) -> None:
    """Compile with the allow-listed optimizer, sparse categorical cross-entropy and accuracy."""
    settings = {key: value for key, value in optimizer_cfg.items() if key != "name"}
    model.compile(
        optimizer=OPTIMIZER_CLASSES[optimizer_cfg.name](**settings),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        steps_per_execution=steps_per_execution,
    )


def parameter_counts(model: keras.Model) -> tuple[int, int]:
    """Total and trainable parameter counts."""
    trainable = sum(int(weight.numpy().size) for weight in model.trainable_weights)
    return int(model.count_params()), trainable
