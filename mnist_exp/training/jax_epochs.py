"""What the JAX backend needs: device-resident epochs, scanned steps, TensorFlow kept out.

By default (:func:`fit_on_device`) the data lives on the device and each epoch is one
compiled call. Step by step (``train.device_epochs=false``), ``steps_per_execution``
training steps run as one compiled ``lax.scan``.

Keras 3's JAX trainer executes ``steps_per_execution`` as a Python loop over a jitted
single step, so it saves nothing: each of the ~1,700 steps per epoch still pays a
dispatch from Python. Scanning the same ``train_step`` over a stack of batches compiles
the loop into one XLA call. The math is unchanged (same batches, same order, same
updates, same dropout random stream); only the per-step Python overhead goes away.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import jax
import keras
import numpy as np
from keras import tree


def keep_tensorflow_out() -> None:
    """Make Keras behave as if TensorFlow were not installed.

    Keras reaches for TensorFlow whenever it is installed, even on JAX (to seed it, and
    to recognise its shapes when saving), and importing it costs seconds of start-up. A
    JAX run uses no TensorFlow, so Keras runs as it does on a JAX-only installation.
    """
    # The one private Keras name here, written against Keras 3.10-3.15 (tested in
    # tests/training/test_jax_epochs.py): Keras has no public switch for it, and hiding
    # TensorFlow from the whole process (sys.modules) breaks MLflow, which imports it.
    from keras.src.utils.module_utils import tensorflow

    tensorflow._available = False


def _build_compiled_state(model: keras.Model, x: np.ndarray, y: np.ndarray) -> None:
    """Create the compiled loss's and metrics' variables, as ``fit`` does on its first
    batch, through Keras's public ``compute_loss`` and ``compute_metrics`` on one example
    (eagerly: nothing is compiled, no weight changes); the metrics start from zero. They
    need the prediction's shape and type only: a uniform guess stands in for the model's
    output, which would cost an eager pass through every layer."""
    classes = model.output_shape[-1]
    y_pred = np.full((len(y), classes), 1 / classes, dtype=keras.config.floatx())
    model.compute_loss(x=x, y=y, y_pred=y_pred)
    model.compute_metrics(x, y, y_pred, sample_weight=None)
    model.reset_metrics()


def _scan_train_step(model: keras.Model) -> Callable:
    """A jitted function: (state, stacked batches) -> (logs after the last step, state)."""

    def steps(state, stacked):
        def one_step(carry, batch):
            logs, carry = model.train_step(carry, batch)
            return carry, logs

        state, logs = jax.lax.scan(one_step, state, stacked)
        return tree.map_structure(lambda values: values[-1], logs), state

    return jax.jit(steps, donate_argnums=0)


def _runs_of_equal_shape(batches: list) -> Iterator[list]:
    """Consecutive batches grouped by shape (only an epoch's short last batch differs)."""
    run: list = []
    for batch in batches:
        if run and tree.map_structure(np.shape, batch) != tree.map_structure(np.shape, run[0]):
            yield run
            run = []
        run.append(batch)
    if run:
        yield run


def use_scanned_steps(model: keras.Model) -> None:
    """Make ``model.fit`` run each ``steps_per_execution`` group of batches as one scan.

    Call after ``compile`` (which resets the train function) and before ``fit``.
    """
    scanned = _scan_train_step(model)

    def train_function(state, iterator):
        batches = [next(iterator)]  # an exhausted epoch ends here, as in Keras's own loop
        for _ in range(model.steps_per_execution - 1):
            try:
                batches.append(next(iterator))
            except StopIteration:
                break
        logs = None
        for run in _runs_of_equal_shape(batches):
            stacked = tree.map_structure(lambda *parts: np.stack(parts), *run)
            logs, state = scanned(state, stacked)
        return logs, state

    model.train_function = train_function


TRAINING_STATE = ("trainable", "non_trainable", "optimizer", "metrics")


def _variables(model: keras.Model, group: str) -> list:
    """One of the model's variable groups, named as in :data:`TRAINING_STATE`."""
    return {
        "trainable": model.trainable_variables,
        "non_trainable": model.non_trainable_variables,
        "optimizer": model.optimizer.variables,
        "metrics": model.metrics_variables,
    }[group]


def _state(model: keras.Model, *groups: str) -> tuple[list, ...]:
    """The values of the model's variable ``groups``, as JAX's stateless steps take them."""
    return tuple([variable.value for variable in _variables(model, group)] for group in groups)


def _assign_training_state(model: keras.Model, state: tuple[list, ...]) -> None:
    """Write a training state (ordered as :data:`TRAINING_STATE`) back to the model."""
    for group, values in zip(TRAINING_STATE, state, strict=True):
        for variable, value in zip(_variables(model, group), values, strict=True):
            variable.assign(value)


def _batched(count: int, batch_size: int) -> tuple[int, int]:
    """(full batches, samples left for the short last batch)."""
    return count // batch_size, count % batch_size


def _epoch_function(model: keras.Model, batch_size: int) -> Callable:
    """Jitted (state, images, labels, order) -> (logs, state): the epoch's full batches,
    gathered on the device in ``order``, as one scan, then its short last batch."""

    def epoch(state, images, labels, order):
        full, rest = _batched(order.shape[0], batch_size)

        def one_step(carry, indices):
            logs, carry = model.train_step(carry, (images[indices], labels[indices]))
            return carry, logs

        groups = order[: full * batch_size].reshape(full, batch_size)
        state, logs = jax.lax.scan(one_step, state, groups)
        logs = tree.map_structure(lambda values: values[-1], logs)
        if rest:
            tail = order[full * batch_size :]
            logs, state = model.train_step(state, (images[tail], labels[tail]))
        return logs, state

    return jax.jit(epoch, donate_argnums=0)


def _evaluate_function(model: keras.Model, batch_size: int) -> Callable:
    """Jitted (state, images, labels) -> logs: metrics over the whole set, in batches of
    ``batch_size`` (the last one short) scanned on the device."""

    def evaluate(state, images, labels):
        full, rest = _batched(images.shape[0], batch_size)

        def one_step(carry, batch):
            logs, carry = model.test_step(carry, batch)
            return carry, logs

        logs = {}
        if full:
            stacked = tree.map_structure(
                lambda array: (
                    array[: full * batch_size].reshape(full, batch_size, -1)
                    if array.ndim > 1
                    else array[: full * batch_size].reshape(full, batch_size)
                ),
                (images, labels),
            )
            state, logs = jax.lax.scan(one_step, state, stacked)
            logs = tree.map_structure(lambda values: values[-1], logs)
        if rest:
            logs, state = model.test_step(state, (images[-rest:], labels[-rest:]))
        return logs

    return jax.jit(evaluate)


# The last jitted epoch and evaluation functions, by what their trace depends on.
_last_compiled: list = []


def _compiled_functions(
    model: keras.Model, batch_size: int, validation_batch_size: int, arrays: dict[str, np.ndarray]
) -> tuple[Callable, Callable]:
    """The jitted epoch and evaluation functions for ``model``: those of the previous fit
    in this process when everything their trace depends on is the same (a seed sweep's
    next job), so that the job skips tracing and compiling them again.

    A trace depends on the model's architecture and the compiled loss, metrics and
    optimizer with its settings (each job's weights, optimizer state, metrics and random
    state are passed in, never traced in), the batch sizes and the data's shapes and
    types. The previous model stays referenced by the functions, unused when they run.
    """
    key = json.dumps(
        [
            model.to_json(),
            model.get_compile_config(),
            batch_size,
            validation_batch_size,
            {name: (array.shape, str(array.dtype)) for name, array in arrays.items()},
        ],
        default=str,
        sort_keys=True,
    )
    if not _last_compiled or _last_compiled[0] != key:
        functions = (
            _epoch_function(model, batch_size),
            _evaluate_function(model, validation_batch_size),
        )
        _last_compiled[:] = [key, functions]
    return _last_compiled[1]


def fit_on_device(
    model: keras.Model,
    arrays: dict[str, np.ndarray],
    batch_size: int,
    epochs: int,
    epoch_order: Callable[[int], np.ndarray],
    callbacks: list[keras.callbacks.Callback],
    initial_epoch: int = 0,
    verbose: int = 2,
    validation_batch_size: int = 1024,
) -> dict[str, list[float]]:
    """``model.fit`` with the data on the device and each epoch one compiled call.

    ``arrays`` holds x_train, y_train, x_val, y_val. They go to the default JAX device
    once; each epoch's batch order (``epoch_order(epoch)``) is one index array, and the
    epoch's batches are gathered from it on the device. Callbacks see what ``fit`` shows
    them at the end of every epoch (synced weights, optimizer state, the epoch's training
    and validation metrics), so checkpoints, early stopping and divergence checks work;
    batch-level callbacks are not called. Returns the history of these epochs.
    """
    on_device = {name: jax.device_put(array) for name, array in arrays.items()}
    _build_compiled_state(model, arrays["x_train"][:1], arrays["y_train"][:1])
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    train_epoch, evaluate = _compiled_functions(model, batch_size, validation_batch_size, arrays)
    steps = -(-len(arrays["y_train"]) // batch_size)
    callback_list = keras.callbacks.CallbackList(
        callbacks,
        add_history=True,
        add_progbar=verbose != 0,
        verbose=verbose,
        epochs=epochs,
        steps=steps,
        model=model,
    )
    model.stop_training = False
    callback_list.on_train_begin()
    for epoch in range(initial_epoch, epochs):
        model.reset_metrics()
        callback_list.on_epoch_begin(epoch)
        order = jax.device_put(np.asarray(epoch_order(epoch), dtype=np.int32))
        logs, state = train_epoch(
            _state(model, *TRAINING_STATE), on_device["x_train"], on_device["y_train"], order
        )
        _assign_training_state(model, state)
        epoch_logs = {name: float(value) for name, value in logs.items()}
        callback_list.on_train_batch_end(steps - 1, epoch_logs)  # the progress bar's count
        model.reset_metrics()
        val_logs = evaluate(
            _state(model, "trainable", "non_trainable", "metrics"),
            on_device["x_val"],
            on_device["y_val"],
        )
        epoch_logs.update({f"val_{name}": float(value) for name, value in val_logs.items()})
        callback_list.on_epoch_end(epoch, epoch_logs)
        if model.stop_training:
            break
    callback_list.on_train_end()
    return model.history.history
