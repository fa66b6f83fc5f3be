"""``python -m bench.jax_yardstick DATA.npz EPOCHS BATCH SEED``: the speed limit.

The reference model's math (Dense 256, dropout 0.5, Dense 128, Dense 128, batch norm,
Dense 10; Adam 1e-3; sparse categorical cross-entropy) written directly in JAX, with the
training set on the device and each epoch one compiled ``lax.scan`` over its full batches:
how fast this model can train on this machine, with no framework around it. It trains on
the same 90 % of the training set as mnist_exp (the rest is its validation split) and
validates on the rest every epoch, as mnist_exp does. The same idea as
``../shared/gpu/limit_probe.py``, with Adam written out instead of taken from optax. Prints
one JSON line: fit seconds (compilation excluded, as the probe does), the median epoch,
samples, test accuracy and the device.
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

LAYERS = [(784, 256), (256, 128), (128, 128), (128, 10)]
BETA_1, BETA_2, EPSILON, LEARNING_RATE = 0.9, 0.999, 1e-7, 1e-3


def init(key: jax.Array) -> tuple[dict, dict]:
    """Glorot-uniform weights, zero biases, batch-norm scale 1 and shift 0; its statistics."""
    params = {}
    for index, ((fan_in, fan_out), part) in enumerate(
        zip(LAYERS, jax.random.split(key, 4), strict=True)
    ):
        limit = (6 / (fan_in + fan_out)) ** 0.5
        params[f"w{index}"] = jax.random.uniform(
            part, (fan_in, fan_out), minval=-limit, maxval=limit
        )
        params[f"b{index}"] = jnp.zeros(fan_out)
    params["gamma"], params["beta"] = jnp.ones(128), jnp.zeros(128)
    return params, {"mean": jnp.zeros(128), "var": jnp.ones(128)}


def forward(params, stats, images, key, training):
    """Logits, and the batch-norm statistics after this batch."""
    hidden = jax.nn.relu(images @ params["w0"] + params["b0"])
    if training:
        hidden = jnp.where(jax.random.bernoulli(key, 0.5, hidden.shape), hidden / 0.5, 0.0)
    hidden = jax.nn.relu(hidden @ params["w1"] + params["b1"])
    hidden = jax.nn.relu(hidden @ params["w2"] + params["b2"])
    if training:
        mean, var = hidden.mean(0), hidden.var(0)
        stats = {
            "mean": 0.99 * stats["mean"] + 0.01 * mean,
            "var": 0.99 * stats["var"] + 0.01 * var,
        }
    else:
        mean, var = stats["mean"], stats["var"]
    hidden = (hidden - mean) / jnp.sqrt(var + 1e-3) * params["gamma"] + params["beta"]
    return hidden @ params["w3"] + params["b3"], stats


def cross_entropy(logits, labels):
    """Mean sparse categorical cross-entropy of softmax(logits)."""
    picked = jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=1)
    return -picked.mean()


def make_epoch(batch_size: int):
    """A jitted (state, key, images, labels) -> (state, mean loss): one shuffled epoch."""

    def loss(params, stats, images, labels, key):
        logits, stats = forward(params, stats, images, key, True)
        return cross_entropy(logits, labels), stats

    @jax.jit
    def epoch(state, key, images, labels):
        def step(state, inputs):
            params, stats, moments, count = state
            indices, dropout = inputs
            (value, stats), grads = jax.value_and_grad(loss, has_aux=True)(
                params, stats, images[indices], labels[indices], dropout
            )
            count = count + 1
            first = jax.tree.map(lambda m, g: BETA_1 * m + (1 - BETA_1) * g, moments[0], grads)
            second = jax.tree.map(lambda v, g: BETA_2 * v + (1 - BETA_2) * g * g, moments[1], grads)
            rate = LEARNING_RATE * jnp.sqrt(1 - BETA_2**count) / (1 - BETA_1**count)
            params = jax.tree.map(
                lambda p, m, v: p - rate * m / (jnp.sqrt(v) + EPSILON), params, first, second
            )
            return (params, stats, (first, second), count), value

        order_key, dropout_key = jax.random.split(key)
        steps = images.shape[0] // batch_size
        order = jax.random.permutation(order_key, images.shape[0])[: steps * batch_size]
        state, losses = jax.lax.scan(
            step,
            state,
            (order.reshape(steps, batch_size), jax.random.split(dropout_key, steps)),
        )
        return state, losses.mean()

    return epoch


@jax.jit
def accuracy(params, stats, images, labels):
    """Share of ``images`` classified right."""
    logits, _ = forward(params, stats, images, None, False)
    return (logits.argmax(1) == labels).mean()


def main() -> None:
    """Train, time the epochs after a compiling one, print the JSON line."""
    path, epochs, batch_size, seed = sys.argv[1], *map(int, sys.argv[2:5])
    with np.load(path) as data:
        images = data["x_train"].reshape(-1, 784).astype("float32") / 255
        labels = data["y_train"].astype("int32")
        test_images = jnp.asarray(data["x_test"].reshape(-1, 784).astype("float32") / 255)
        test_labels = jnp.asarray(data["y_test"].astype("int32"))
    order = np.random.default_rng(seed).permutation(len(labels))
    validation = round(len(labels) * 0.1)
    train, val = order[validation:], order[:validation]
    x, y = jnp.asarray(images[train]), jnp.asarray(labels[train])
    x_val, y_val = jnp.asarray(images[val]), jnp.asarray(labels[val])
    epoch = make_epoch(batch_size)
    keys = jax.random.split(jax.random.PRNGKey(seed), epochs + 1)

    def fresh():
        params, stats = init(jax.random.PRNGKey(seed))
        zeros = jax.tree.map(jnp.zeros_like, params)
        return params, stats, (zeros, zeros), jnp.zeros((), jnp.int32)

    state, _ = epoch(fresh(), keys[0], x, y)  # compile once, outside the clock
    accuracy(state[0], state[1], x_val, y_val).block_until_ready()
    state = fresh()
    start = time.perf_counter()
    epoch_seconds = []
    for index in range(epochs):
        began = time.perf_counter()
        state, _ = epoch(state, keys[index + 1], x, y)
        float(accuracy(state[0], state[1], x_val, y_val))  # validate, as mnist_exp does
        epoch_seconds.append(time.perf_counter() - began)
    fit_seconds = time.perf_counter() - start
    result = {
        "fit_seconds": round(fit_seconds, 2),
        "median_epoch_seconds": round(statistics.median(epoch_seconds[1:]), 4),
        "train_samples": len(train),
        "test_accuracy": round(float(accuracy(state[0], state[1], test_images, test_labels)), 4),
        "device": f"{jax.devices()[0].platform} ({jax.devices()[0].device_kind})",
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
