"""Fit a compiled model on the splits; predict class probabilities with it."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np
from omegaconf import DictConfig

from mnist_exp.data import Splits
from mnist_exp.errors import ExperimentFailed


@dataclass(frozen=True)
class FitResult:
    """What a fit produced: per-epoch history and the validation score of the kept weights."""

    history: dict[str, list[float]]
    val_accuracy: float  # of the weights the model ends with: the objective sweepers maximise
    epochs_run: int


PREDICT_BATCH = 1024


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
    """Passes each epoch's Keras logs to ``log_metrics(metrics, step)``, step = epoch (from 1)."""

    def __init__(self, log_metrics: Callable[[dict[str, float], int], None]) -> None:
        super().__init__()
        self.log_metrics = log_metrics

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        """Forward the finished epoch's metrics."""
        self.log_metrics({name: float(value) for name, value in (logs or {}).items()}, epoch + 1)


def fit(
    model: keras.Model,
    splits: Splits,
    train_cfg: DictConfig,
    callbacks: list[keras.callbacks.Callback],
) -> FitResult:
    """Train with the config's epochs and batch size (early stopping if on).

    Raises :class:`TrainingDiverged` if the loss stops being finite.
    """
    callbacks = [*callbacks, StopOnDivergence()]
    if train_cfg.early_stopping:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=train_cfg.patience, restore_best_weights=True
            )
        )
    history = model.fit(
        splits.x_train,
        splits.y_train,
        validation_data=(splits.x_val, splits.y_val),
        epochs=train_cfg.epochs,
        batch_size=train_cfg.batch_size,
        callbacks=callbacks,
        verbose=train_cfg.verbose,
    ).history
    val_losses = history["val_loss"]
    kept_epoch = val_losses.index(min(val_losses)) if train_cfg.early_stopping else -1
    return FitResult(
        history=history,
        val_accuracy=float(history["val_accuracy"][kept_epoch]),
        epochs_run=len(val_losses),
    )


def predict_probabilities(model: keras.Model, images: np.ndarray) -> np.ndarray:
    """Class probabilities for ``images``, in large batches (no gradients to keep)."""
    return np.asarray(model.predict(images, batch_size=PREDICT_BATCH, verbose=0))
