"""The baseline: the reference model trained by a plain Keras script, nothing else.

    python -m bench.plain_keras DATA.npz EPOCHS BATCH SEED

Trains on the same 90 % / 10 % train/validation split the framework uses (seeded), on NumPy
arrays with ``model.fit``, evaluates on the test set, and prints one JSON line with the
timings, the accuracy and this machine's measured float32 matmul peak.
"""

from __future__ import annotations

import json
import sys
import time

import keras
import numpy as np


def matmul_peak_gflops(size: int = 4096, repeats: int = 5) -> float:
    """Best observed float32 GFLOP/s of a large TensorFlow matrix product."""
    import tensorflow as tf

    a = tf.random.normal((size, size))
    b = tf.random.normal((size, size))
    tf.linalg.matmul(a, b).numpy()  # warm up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        tf.linalg.matmul(a, b).numpy()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def main() -> None:
    """Train, evaluate, print the JSON result line."""
    path, epochs, batch, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    with np.load(path) as data:
        x = (data["x_train"].reshape(-1, 784) / 255.0).astype("float32")
        y = data["y_train"].astype("int64")
        x_test = (data["x_test"].reshape(-1, 784) / 255.0).astype("float32")
        y_test = data["y_test"].astype("int64")
    order = np.random.default_rng(seed).permutation(len(y))
    n_val = round(len(y) * 0.1)
    val, train = order[:n_val], order[n_val:]
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((784,)),
            keras.layers.Dense(256, activation="relu"),
            keras.layers.Dropout(0.5),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    start = time.perf_counter()
    model.fit(
        x[train],
        y[train],
        validation_data=(x[val], y[val]),
        epochs=epochs,
        batch_size=batch,
        verbose=0,
    )
    fit_seconds = time.perf_counter() - start
    _, test_accuracy = model.evaluate(x_test, y_test, batch_size=1024, verbose=0)
    print(
        json.dumps(
            {
                "fit_seconds": fit_seconds,
                "train_samples": len(train),
                "test_accuracy": float(test_accuracy),
                "matmul_peak_gflops": matmul_peak_gflops(),
            }
        )
    )


if __name__ == "__main__":
    main()
