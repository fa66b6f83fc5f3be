"""What the JAX backend needs: scanned training steps, and TensorFlow kept out.

On JAX, ``steps_per_execution`` training steps run as one compiled ``lax.scan``.

Keras 3's JAX trainer executes ``steps_per_execution`` as a Python loop over a jitted
single step, so it saves nothing: each of the ~1,700 steps per epoch still pays a
dispatch from Python. Scanning the same ``train_step`` over a stack of batches compiles
the loop into one XLA call. The math is unchanged (same batches, same order, same
updates, same dropout random stream); only the per-step Python overhead goes away.
"""

from __future__ import annotations

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
    from keras.src.utils.module_utils import tensorflow

    tensorflow._available = False


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
