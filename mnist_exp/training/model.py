"""Build and compile the Keras model described by the ``model`` and ``optimizer`` configs."""

from __future__ import annotations

import keras
from keras import layers
from omegaconf import DictConfig

from mnist_exp.config.schema import OPTIMIZERS
from mnist_exp.data.splits import Splits
from mnist_exp.training.fit import steps_per_epoch, steps_per_execution

# The only optimizer classes a config can name (never an arbitrary import path): the
# schema's optimizers, each with the keras.optimizers class its schema names.
OPTIMIZER_CLASSES = {
    name: getattr(keras.optimizers, schema.keras_class) for name, schema in OPTIMIZERS.items()
}


def _placed(placement: str, index: int, depth: int) -> bool:
    """Whether hidden layer ``index`` (of ``depth``) gets a layer placed at ``placement``."""
    return placement == "all" or index == {"first": 0, "last": depth - 1}[placement]


def augmentation() -> list[keras.layers.Layer]:
    """Random shifts (10 %), rotations (±10°) and zoom (±10 %) of 28x28x1 images. Keras
    applies them in training only: inference is unchanged."""
    return [
        layers.RandomTranslation(0.1, 0.1, fill_mode="constant"),
        layers.RandomRotation(10 / 360, fill_mode="constant"),
        layers.RandomZoom(0.1, fill_mode="constant"),
    ]


def build_model(
    model_cfg: DictConfig, input_dim: int = 784, num_classes: int = 10, augment: bool = False
) -> keras.Model:
    """Return the uncompiled model the config describes, taking flat pixels.

    ``type: mlp``: the Dense layers of ``hidden_units``, each followed by BatchNormalization
    and Dropout where placed. ``type: cnn``: first the convolution blocks (pixels reshaped
    to 28x28x1), then the same Dense layers. The output is Dense(num_classes, softmax).
    With ``augment``, :func:`augmentation` comes first (no weights: the parameter count
    is unchanged).
    """
    convolutional = model_cfg.type == "cnn"
    stack: list = [keras.Input(shape=(input_dim,))]
    if convolutional or augment:
        side = int(input_dim**0.5)
        stack.append(layers.Reshape((side, side, 1)))
        stack.extend(augmentation() if augment else [])
        stack.extend(_convolution_blocks(model_cfg) if convolutional else [])
        stack.append(layers.Flatten())
    depth = len(model_cfg.hidden_units)
    for index, units in enumerate(model_cfg.hidden_units):
        stack.append(layers.Dense(units, activation=model_cfg.activation))
        if model_cfg.batch_norm and _placed(model_cfg.batch_norm_layers, index, depth):
            stack.append(layers.BatchNormalization())
        if model_cfg.dropout > 0 and _placed(model_cfg.dropout_layers, index, depth):
            stack.append(layers.Dropout(model_cfg.dropout))
    # Probabilities in float32 whatever the precision policy (stable loss, same outputs).
    stack.append(layers.Dense(num_classes, activation="softmax", dtype="float32"))
    return keras.Sequential(stack, name=model_cfg.name)


def _convolution_blocks(model_cfg: DictConfig) -> list[keras.layers.Layer]:
    """Per block: ``conv_per_block`` x (Conv2D, BatchNorm if on), 2x2 max pooling, dropout."""
    blocks: list = []
    for filters in model_cfg.conv_filters:
        for _ in range(model_cfg.conv_per_block):
            blocks.append(
                layers.Conv2D(
                    filters, model_cfg.kernel_size, padding="same", activation=model_cfg.activation
                )
            )
            if model_cfg.batch_norm:
                blocks.append(layers.BatchNormalization())
        blocks.append(layers.MaxPooling2D(2))
        if model_cfg.conv_dropout > 0:
            blocks.append(layers.Dropout(model_cfg.conv_dropout))
    return blocks


def learning_rate(
    optimizer_cfg: DictConfig, steps_per_epoch: int, epochs: int
) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """The configured learning rate, or its schedule over ``epochs`` of training.

    Only Keras's built-in schedules, so saved models load anywhere without our code:
    warm-up is CosineDecay's linear ramp (with ``alpha=1``, a constant after it).
    """
    peak = optimizer_cfg.learning_rate
    warmup = optimizer_cfg.warmup_epochs * steps_per_epoch
    schedules = keras.optimizers.schedules
    if optimizer_cfg.schedule == "exponential":
        return schedules.ExponentialDecay(peak, steps_per_epoch, optimizer_cfg.decay_rate)
    if optimizer_cfg.schedule == "cosine":
        return schedules.CosineDecay(
            0.0 if warmup else peak,
            decay_steps=max(1, epochs * steps_per_epoch - warmup),
            warmup_target=peak if warmup else None,
            warmup_steps=warmup,
        )
    if optimizer_cfg.schedule == "warmup":
        return schedules.CosineDecay(
            0.0, decay_steps=1, alpha=1.0, warmup_target=peak, warmup_steps=warmup
        )
    return peak


def compile_model(
    model: keras.Model,
    optimizer_cfg: DictConfig,
    steps_per_execution: int = 1,
    steps_per_epoch: int = 1,
    epochs: int = 1,
) -> None:
    """Compile with the allow-listed optimizer and its learning-rate schedule, sparse
    categorical cross-entropy and accuracy."""
    settings = {
        key: value
        for key, value in optimizer_cfg.items()
        if key not in ("name", "schedule", "warmup_epochs", "decay_rate")
    }
    settings["learning_rate"] = learning_rate(optimizer_cfg, steps_per_epoch, epochs)
    model.compile(
        optimizer=OPTIMIZER_CLASSES[optimizer_cfg.name](**settings),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        steps_per_execution=steps_per_execution,
    )


def build_for_training(cfg: DictConfig, splits: Splits) -> keras.Model:
    """The model ``cfg`` describes, sized for ``splits`` and compiled for ``cfg.train``'s
    epochs and batch size (steps per execution and learning-rate schedule included)."""
    model = build_model(
        cfg.model,
        input_dim=splits.x_train.shape[1],
        num_classes=len(splits.class_names),
        augment=cfg.data.augment,
    )
    steps = steps_per_epoch(splits, cfg.train.batch_size)
    compile_model(
        model, cfg.optimizer, steps_per_execution(cfg.train, steps), steps, cfg.train.epochs
    )
    return model


def parameter_counts(model: keras.Model) -> tuple[int, int]:
    """Total and trainable parameter counts."""
    trainable = sum(int(weight.numpy().size) for weight in model.trainable_weights)
    return int(model.count_params()), trainable
