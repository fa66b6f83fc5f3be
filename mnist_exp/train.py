"""Fit a compiled model on the splits; predict class probabilities with it."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from omegaconf import DictConfig

from mnist_exp.data import Splits
from mnist_exp.errors import ExperimentFailed
from mnist_exp.resume import MODEL_FILE, STATE_FILE, Checkpoint


@dataclass(frozen=True)
class FitResult:
    """What a fit produced: per-epoch history and the validation score of the kept weights."""

    history: dict[str, list[float]]
    val_accuracy: float  # of the weights the model ends with: the objective sweepers maximise
    epochs_run: int


PREDICT_BATCH = 1024


def _seed_states(model: keras.Model) -> list:
    """The random-number states of the model's dropout layers, in layer order."""
    return [v for v in model.variables if v.path.endswith("seed_generator_state")]


def load_checkpoint_model(checkpoint: Checkpoint) -> keras.Model:
    """The checkpointed model with its weights, optimizer state and dropout RNG states."""
    model = keras.models.load_model(checkpoint.model_path)
    for variable, state in zip(_seed_states(model), checkpoint.seed_states, strict=True):
        variable.assign(state)
    return model


class SaveCheckpoint(keras.callbacks.Callback):
    """After every epoch, atomically replace the checkpoint in ``folder``."""

    def __init__(self, folder: Path, run_id: str, resume_from: Checkpoint | None = None) -> None:
        super().__init__()
        self.folder = folder
        self.run_id = run_id
        self.history = {
            key: list(values)
            for key, values in (resume_from.history if resume_from else {}).items()
        }

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        """Save the model, then the state that names it (each via a temp file + rename)."""
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        self.folder.mkdir(parents=True, exist_ok=True)
        partial = self.folder / f"partial-{MODEL_FILE}"
        self.model.save(partial)
        os.replace(partial, self.folder / MODEL_FILE)
        state = {
            "run_id": self.run_id,
            "epoch": epoch + 1,
            "history": self.history,
            "seed_states": [variable.numpy().tolist() for variable in _seed_states(self.model)],
        }
        (self.folder / f"{STATE_FILE}.partial").write_text(json.dumps(state))
        os.replace(self.folder / f"{STATE_FILE}.partial", self.folder / STATE_FILE)


class TrainingDiverged(ExperimentFailed):
    """The loss became NaN or infinite: training cannot recover, so it stops."""

    reason = "nan_loss"


class StopOnDivergence(keras.callbacks.Callback):
    """Raises :class:`TrainingDiverged` at the end of an epoch whose loss is not finite.

    Checked per epoch rather than per batch, so that no batch waits on a host sync.
    """

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        """Stop training if this epoch's loss is NaN or infinite."""
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            raise TrainingDiverged(f"loss became {loss} in epoch {epoch + 1}")


class EpochMetricsCallback(keras.callbacks.Callback):
    """Passes each epoch's Keras logs to ``log_metrics(metrics, step)``, step = epoch (from 1),
    and keeps the clock: when training started and how long the logging took."""

    def __init__(self, log_metrics: Callable[[dict[str, float], int], None]) -> None:
        super().__init__()
        self.log_metrics = log_metrics
        self.started_at: float | None = None  # perf_counter() when fit began
        self.logging_seconds: list[float] = []

    def on_train_begin(self, logs: dict | None = None) -> None:
        """Note when training started."""
        self.started_at = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        """Forward the finished epoch's metrics, timing the write."""
        start = time.perf_counter()
        self.log_metrics({name: float(value) for name, value in (logs or {}).items()}, epoch + 1)
        self.logging_seconds.append(time.perf_counter() - start)


def fit(
    model: keras.Model,
    splits: Splits,
    train_cfg: DictConfig,
    callbacks: list[keras.callbacks.Callback],
    seed: int,
    resume_from: Checkpoint | None = None,
) -> FitResult:
    """Train for the config's epochs and batch size (early stopping if on), continuing
    after ``resume_from``'s epoch if given.

    Each epoch's batch order depends only on (seed, epoch), so a resumed run sees the same
    batches as one that never stopped. Raises :class:`TrainingDiverged` if the loss
    stops being finite.
    """
    done = resume_from.epoch if resume_from else 0
    batches = ShuffledEpochs(splits, train_cfg.batch_size, seed)
    callbacks = [batches, *callbacks, StopOnDivergence()]
    if train_cfg.early_stopping:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=train_cfg.patience, restore_best_weights=True
            )
        )
    if keras.backend.backend() == "jax" and model.steps_per_execution > 1:
        from mnist_exp.jax_steps import use_scanned_steps

        use_scanned_steps(model)
    new = model.fit(
        batches.dataset,
        validation_data=(splits.x_val, splits.y_val),
        validation_batch_size=PREDICT_BATCH,
        initial_epoch=done,
        shuffle=False,  # ShuffledEpochs shuffles each epoch
        epochs=train_cfg.epochs,
        callbacks=callbacks,
        verbose=train_cfg.verbose,
    ).history
    prior = resume_from.history if resume_from else {}
    history = {key: [*prior.get(key, []), *new.get(key, [])] for key in {*prior, *new}}
    val_losses = new.get("val_loss", [])
    if train_cfg.early_stopping and val_losses:
        kept_epoch = done + val_losses.index(min(val_losses))
    else:
        kept_epoch = len(history["val_loss"]) - 1
    return FitResult(
        history=history,
        val_accuracy=float(history["val_accuracy"][kept_epoch]),
        epochs_run=len(history["val_loss"]),
    )


def steps_per_epoch(splits: Splits, batch_size: int) -> int:
    """Gradient steps in one pass over the training set (the last batch may be short)."""
    return math.ceil(len(splits.y_train) / batch_size)


class ShuffledEpochs(keras.callbacks.Callback):
    """The training batches of one epoch as a ``tf.data`` dataset, re-shuffled for every
    epoch by a stateless permutation keyed on (seed, epoch).

    Pass it to ``fit`` both as the data (``.dataset``) and as a callback: the callback
    sets the epoch before Keras starts iterating, so the order depends only on (seed,
    epoch) and a resumed run sees the same batches as one that never stopped. Each
    epoch is a dataset of its own (not one stream over all epochs), so
    ``steps_per_execution`` cannot pull batches across an epoch boundary.
    """

    def __init__(self, splits: Splits, batch_size: int, seed: int) -> None:
        super().__init__()
        import tensorflow as tf

        self._epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
        images, labels = tf.constant(splits.x_train), tf.constant(splits.y_train)
        count = len(splits.y_train)

        def shuffled_order(_: tf.Tensor) -> tf.data.Dataset:
            key = tf.stack([tf.constant(seed, tf.int64), self._epoch.read_value()])
            order = tf.random.experimental.stateless_shuffle(tf.range(count, dtype=tf.int64), key)
            return tf.data.Dataset.from_tensor_slices(order)

        self.dataset = (
            tf.data.Dataset.range(1)
            .flat_map(shuffled_order)
            .batch(batch_size)
            .map(lambda index: (tf.gather(images, index), tf.gather(labels, index)))
            .apply(tf.data.experimental.assert_cardinality(steps_per_epoch(splits, batch_size)))
            .prefetch(tf.data.AUTOTUNE)
        )

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        """Key the coming epoch's shuffle on its number."""
        self._epoch.assign(epoch)


def predict_probabilities(model: keras.Model, images: np.ndarray) -> np.ndarray:
    """Class probabilities for ``images``, in large batches (no gradients to keep)."""
    return np.asarray(model.predict(images, batch_size=PREDICT_BATCH, verbose=0))
