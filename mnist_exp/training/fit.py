"""Fit a compiled model on the splits: shuffled epochs, steps per execution, stopping
rules, and the callback that forwards each epoch's metrics."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np
from omegaconf import DictConfig

from mnist_exp import interrupts
from mnist_exp.data.splits import Splits
from mnist_exp.errors import RunFailed
from mnist_exp.training.checkpoint import Checkpoint
from mnist_exp.training.inference import PREDICT_BATCH


@dataclass(frozen=True)
class FitResult:
    """What a fit produced: per-epoch history and the validation score of the kept weights."""

    history: dict[str, list[float]]
    val_accuracy: float  # of the weights the model ends with: the objective sweepers maximise
    epochs_run: int


class TrainingDiverged(RunFailed):
    """The loss became NaN or infinite: training cannot recover, so it stops."""

    reason = "nan_loss"


class TrainingAtChance(TrainingDiverged):
    """The model guesses no better than chance while its loss is far above a uniform
    guess's: the weights blew up (Keras clips the probabilities, so on JAX such a loss
    stays finite where TensorFlow's becomes NaN)."""

    reason = "diverged"


CHANCE_LOSS_FACTOR = 2.0  # a loss this many times a uniform guess's is no slow start
CHANCE_ACCURACY_FACTOR = 1.5  # accuracy within this many times chance is chance


class StopOnDivergence(keras.callbacks.Callback):
    """Stops training at the end of an epoch whose loss is not finite
    (:class:`TrainingDiverged`), or that ends at chance accuracy with a loss well above
    the chance-level loss ``ln(classes)`` (:class:`TrainingAtChance`): on either backend
    the run then ends FAILED with its reason.

    Checked per epoch rather than per batch, so that no batch waits on a host sync. A
    model that learns slowly sits near the chance-level loss, not far above it, and is
    left to train.
    """

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        """Stop training if this epoch's loss is not finite, or at chance far above the
        chance-level loss."""
        logs = logs or {}
        loss, accuracy = logs.get("loss"), logs.get("accuracy")
        if loss is None:
            return
        if not math.isfinite(loss):
            raise TrainingDiverged(f"loss became {loss} in epoch {epoch + 1}")
        classes = self.model.output_shape[-1]
        chance_loss = math.log(classes)
        if (
            accuracy is not None
            and loss > CHANCE_LOSS_FACTOR * chance_loss
            and accuracy <= CHANCE_ACCURACY_FACTOR / classes
        ):
            raise TrainingAtChance(
                f"loss {loss:.4g} in epoch {epoch + 1} is far above a uniform guess's "
                f"{chance_loss:.3f}, at chance accuracy {accuracy:.3f}: the weights "
                "diverged (lower optimizer.learning_rate)"
            )


class StopWhenTold(keras.callbacks.Callback):
    """Passes each epoch's validation accuracy, its number (from 1) and whether it is the
    last epoch to ``should_stop(value, epoch, last)``; stops training after an epoch for
    which it returns True (an Optuna pruner's verdict), and keeps that epoch in
    ``stopped_after``."""

    def __init__(self, should_stop: Callable[[float, int, bool], bool]) -> None:
        super().__init__()
        self.should_stop = should_stop
        self.stopped_after: int | None = None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        """Ask whether to stop after this epoch; stop if so."""
        value = (logs or {}).get("val_accuracy")
        last = epoch + 1 >= self.params.get("epochs", 0)
        if value is not None and self.should_stop(float(value), epoch + 1, last):
            self.stopped_after = epoch + 1
            self.model.stop_training = True


def float32_value(value: float) -> float:
    """A float32 result (Keras's metrics) as the shortest float that is the same float32:
    0.845, not 0.8450000286102295."""
    return float(str(np.float32(value)))


class EpochMetricsCallback(keras.callbacks.Callback):
    """Passes each epoch's Keras logs, its duration (``seconds``) and, if
    ``log_learning_rate`` (a schedule changes it), the optimizer's learning rate to
    ``log_metrics(metrics, step)``, step = epoch (from 1), and keeps the clock: when
    training started and how long the logging took.

    ``write_with(epoch, logs)`` (the checkpoint) is written in the same stretch with
    interrupts held: a Ctrl-C waits until the epoch is both logged and checkpointed, so a
    resumed run never trains and logs an epoch again that the store already has.
    """

    def __init__(
        self,
        log_metrics: Callable[[dict[str, float], int], None],
        log_learning_rate: bool,
        write_with: Callable[[int, dict | None], None] | None = None,
    ) -> None:
        super().__init__()
        self.log_metrics = log_metrics
        self.log_learning_rate = log_learning_rate
        self.write_with = write_with
        self.started_at: float | None = None  # perf_counter() when fit began
        self.epoch_started_at = 0.0  # perf_counter() when the current epoch began
        self.logging_seconds: list[float] = []

    def on_train_begin(self, logs: dict | None = None) -> None:
        """Note when training started."""
        self.started_at = time.perf_counter()

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        """Note when the epoch started."""
        self.epoch_started_at = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        """Forward the finished epoch's metrics and its duration, timing the write."""
        interrupts.raise_if_received()  # stop before logging an epoch a Ctrl-C cut into
        start = time.perf_counter()
        metrics = {name: float32_value(value) for name, value in (logs or {}).items()}
        metrics["seconds"] = round(start - self.epoch_started_at, 4)  # training, validation
        if self.log_learning_rate:
            rate = keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
            metrics["learning_rate"] = float32_value(rate)  # reached at the end of the epoch
        with interrupts.deferred():
            self.log_metrics(metrics, epoch + 1)
            self.logging_seconds.append(time.perf_counter() - start)
            if self.write_with is not None:
                self.write_with(epoch, logs)

    def timings(self, job_started_at: float) -> dict[str, float]:
        """Where the time went, in seconds (to 0.1 ms) (the names of
        :data:`mnist_exp.results.metric_names.TIMINGS`): start-up (from
        ``job_started_at``, a ``time.perf_counter()`` reading, to the start of training),
        training until now, and the logging's share of each epoch."""
        timings = {"fit_seconds": time.perf_counter() - self.started_at}
        timings["startup_seconds"] = self.started_at - job_started_at
        if self.logging_seconds:
            timings["mlflow_seconds_per_epoch"] = sum(self.logging_seconds) / len(
                self.logging_seconds
            )
        return {name: round(seconds, 4) for name, seconds in timings.items()}


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
    callbacks = [*callbacks, StopOnDivergence()]
    if train_cfg.early_stopping:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=train_cfg.patience, restore_best_weights=True
            )
        )
    on_jax = keras.backend.backend() == "jax"
    if on_jax and train_cfg.device_epochs:
        from mnist_exp.training.jax_epochs import fit_on_device

        count = len(splits.y_train)
        new = fit_on_device(
            model,
            {name: getattr(splits, name) for name in ("x_train", "y_train", "x_val", "y_val")},
            batch_size=train_cfg.batch_size,
            epochs=train_cfg.epochs,
            epoch_order=lambda epoch: epoch_order(seed, epoch, count),
            callbacks=callbacks,
            initial_epoch=done,
            verbose=train_cfg.verbose,
            validation_batch_size=PREDICT_BATCH,
        )
    else:
        if on_jax and model.steps_per_execution > 1:
            from mnist_exp.training.jax_epochs import use_scanned_steps

            use_scanned_steps(model)
        batches = ShuffledEpochs(splits, train_cfg.batch_size, seed)
        new = model.fit(
            batches.dataset,
            validation_data=(splits.x_val, splits.y_val),
            validation_batch_size=PREDICT_BATCH,
            initial_epoch=done,
            shuffle=False,  # ShuffledEpochs shuffles each epoch
            epochs=train_cfg.epochs,
            callbacks=[batches, *callbacks],
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
        val_accuracy=float32_value(history["val_accuracy"][kept_epoch]),
        epochs_run=len(history["val_loss"]),
    )


JAX_STEP_GROUP = 64  # auto on JAX step by step: beyond this, stacking batches costs more


def steps_per_execution(train_cfg: DictConfig, steps: int) -> int:
    """The training steps each compiled call runs, at most an epoch's ``steps`` (a group
    never crosses an epoch). ``auto`` takes the largest grouping that keeps every epoch's
    math and callbacks the same: the whole epoch on TensorFlow (this project's callbacks
    act per epoch), 64 on JAX step by step. JAX's device-resident path runs an epoch per
    call whatever this says: 1 there."""
    on_jax = keras.backend.backend() == "jax"
    if on_jax and train_cfg.device_epochs:
        return 1
    if train_cfg.steps_per_execution == "auto":
        return min(JAX_STEP_GROUP if on_jax else steps, steps)
    return min(int(train_cfg.steps_per_execution), steps)


def steps_per_epoch(splits: Splits, batch_size: int) -> int:
    """Gradient steps in one pass over the training set (the last batch may be short)."""
    return math.ceil(len(splits.y_train) / batch_size)


def epoch_order(seed: int, epoch: int, count: int) -> np.ndarray:
    """The order of the ``count`` training examples in ``epoch``: a permutation that
    depends on (seed, epoch) alone."""
    return np.random.default_rng((seed, epoch)).permutation(count)


class ShuffledEpochs(keras.callbacks.Callback):
    """The training batches of one epoch, re-shuffled for every epoch by
    :func:`epoch_order`.

    Pass it to ``fit`` both as the data (``.dataset``) and as a callback: the callback
    sets the epoch's order before Keras starts iterating, so a resumed run sees the same
    batches as one that never stopped. Each epoch is a dataset of its own (not one stream
    over all epochs), so ``steps_per_execution`` cannot pull batches across an epoch
    boundary. TensorFlow gets a ``tf.data`` pipeline; JAX gets NumPy batches, so a JAX
    run never imports TensorFlow.
    """

    def __init__(self, splits: Splits, batch_size: int, seed: int) -> None:
        super().__init__()
        self.seed, self.count = seed, len(splits.y_train)
        if keras.backend.backend() == "tensorflow":
            self.dataset, self._set_order = _tensorflow_batches(splits, batch_size)
        else:
            self.dataset = _ArrayBatches(splits, batch_size)
            self._set_order = self.dataset.set_order

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        """Shuffle for the coming epoch."""
        self._set_order(epoch_order(self.seed, epoch, self.count))


def _tensorflow_batches(splits: Splits, batch_size: int):
    """A ``tf.data`` dataset of one epoch's batches in the order held by a variable,
    and the function that sets that order."""
    import tensorflow as tf

    images, labels = tf.constant(splits.x_train), tf.constant(splits.y_train)
    order = tf.Variable(tf.range(len(splits.y_train), dtype=tf.int64), trainable=False)

    def batch(step: tf.Tensor):
        indices = order[step * batch_size : (step + 1) * batch_size]
        return tf.gather(images, indices), tf.gather(labels, indices)

    steps = steps_per_epoch(splits, batch_size)
    return tf.data.Dataset.range(steps).map(batch).prefetch(tf.data.AUTOTUNE), order.assign


class _ArrayBatches(keras.utils.PyDataset):
    """One epoch's batches sliced from NumPy arrays in the order last set."""

    def __init__(self, splits: Splits, batch_size: int) -> None:
        super().__init__()
        self.images, self.labels, self.batch_size = splits.x_train, splits.y_train, batch_size
        self.order = np.arange(len(self.labels))

    def set_order(self, order: np.ndarray) -> None:
        """Use ``order`` from the next batch on."""
        self.order = order

    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.batch_size)

    def __getitem__(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        indices = self.order[step * self.batch_size : (step + 1) * self.batch_size]
        return self.images[indices], self.labels[indices]
