"""The yardstick for the project's Optuna study: the same search written by hand.

    python bench/plain_study.py --trials 20 --epochs 5 --data ../shared/data/mnist.npz \
        --seed 42 --out result.json

Plain Optuna and Keras on JAX, no Hydra, no MLflow, an in-memory study: what a user would
write for ``+sweep=optuna_mlp hydra.sweeper.sampler=tpe hydra.sweeper.pruner=median``.
It matches the project's study in everything that decides what is trained:

- data: the npz's training set scaled to float32 / 255 and flattened, split 90 % / 10 %
  by ``np.random.default_rng(seed).permutation`` as the project splits it;
- search space (``conf/sweep/optuna_mlp.yaml``), suggested in the same order under the
  same names and choices: ``model.hidden_units`` categorical over the same strings,
  ``model.dropout`` uniform in [0, 0.5], ``optimizer.learning_rate`` log-uniform in
  [1e-4, 1e-2], ``train.batch_size`` categorical over 32, 64, 128 (or fixed with
  ``--batch-size``);
- sampler ``TPESampler(seed=seed)``; pruner ``MedianPruner()`` with Optuna's defaults, as
  the project's (``n_startup_trials=5, n_warmup_steps=0, interval_steps=1``);
- per trial: ``keras.utils.set_random_seed(seed)``, the ``model=mlp`` network (Dense
  relu layers, each followed by Dropout when the rate is above 0, no batch norm, a
  softmax Dense output), Adam with the Keras defaults at the sampled rate, one
  ``model.fit`` of at most E epochs whose callback reports each epoch's
  ``val_accuracy`` (step = epoch from 1) and stops when the pruner says so (never after
  the last epoch, as the project); the objective is the last epoch's ``val_accuracy``.

The JSON written to ``--out`` has the trial counts, the epochs trained, the best value
the params of every trial, and the script's own time from the start of ``main`` (after
the imports; its caller times the whole process).
"""

from __future__ import annotations

import os

os.environ["KERAS_BACKEND"] = "jax"  # before keras is imported

import argparse
import json
import time

import keras
import numpy as np
import optuna
from optuna.trial import TrialState

HIDDEN_UNITS = ("[256]", "[512]", "[256,128]", "[512,256]", "[1024,512]")
BATCH_SIZES = (32, 64, 128)
VALIDATION_SPLIT = 0.1
VALIDATION_BATCH = 1024  # the project's validation batch (mnist_exp.training.inference)

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def load(path: str, seed: int) -> Arrays:
    """Training and validation images (flat float32 in [0, 1]) and labels of the npz at
    ``path``: its training set, 10 % held out by a permutation seeded with ``seed``."""
    with np.load(path) as data:
        x = (data["x_train"].reshape(len(data["x_train"]), -1) / np.float32(255)).astype("float32")
        y = data["y_train"].astype("int64")
    order = np.random.default_rng(seed).permutation(len(y))
    n_val = max(1, round(len(y) * VALIDATION_SPLIT))
    val, train = order[:n_val], order[n_val:]
    return x[train], y[train], x[val], y[val]


def build(hidden_units: list[int], dropout: float, learning_rate: float) -> keras.Model:
    """The compiled MLP: Dense relu layers, each followed by Dropout if ``dropout`` > 0,
    then a softmax output; Adam (Keras defaults) at ``learning_rate``."""
    stack: list = [keras.Input((784,))]
    for units in hidden_units:
        stack.append(keras.layers.Dense(units, activation="relu"))
        if dropout > 0:
            stack.append(keras.layers.Dropout(dropout))
    stack.append(keras.layers.Dense(10, activation="softmax"))
    model = keras.Sequential(stack)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


class ReportToTrial(keras.callbacks.Callback):
    """Reports each epoch's ``val_accuracy`` to an Optuna trial (step = epoch from 1) and
    stops training when the pruner says so, except after the last epoch."""

    def __init__(self, trial: optuna.Trial, epochs: int) -> None:
        """Report to ``trial``, whose fit runs ``epochs`` epochs at most."""
        super().__init__()
        self.trial = trial
        self.epochs = epochs
        self.pruned = False

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        """Report the epoch's validation accuracy; stop training if the trial is pruned."""
        self.trial.report(float((logs or {})["val_accuracy"]), epoch + 1)
        if epoch + 1 < self.epochs and self.trial.should_prune():
            self.pruned = True
            self.model.stop_training = True


def objective(
    trial: optuna.Trial, data: Arrays, epochs: int, seed: int, batch_size: int | None
) -> float:
    """Train one trial's model; return its last validation accuracy, or raise
    ``optuna.TrialPruned`` when the pruner stopped it."""
    hidden = trial.suggest_categorical("model.hidden_units", HIDDEN_UNITS)
    dropout = trial.suggest_float("model.dropout", 0.0, 0.5)
    rate = trial.suggest_float("optimizer.learning_rate", 1e-4, 1e-2, log=True)
    if batch_size is None:
        batch_size = trial.suggest_categorical("train.batch_size", BATCH_SIZES)
    keras.utils.set_random_seed(seed)
    model = build(json.loads(hidden), dropout, rate)
    report = ReportToTrial(trial, epochs)
    x_train, y_train, x_val, y_val = data
    history = model.fit(
        x_train,
        y_train,
        validation_data=(x_val, y_val),
        validation_batch_size=VALIDATION_BATCH,
        epochs=epochs,
        batch_size=batch_size,
        callbacks=[report],
        verbose=0,
    )
    if report.pruned:
        raise optuna.TrialPruned()
    return float(history.history["val_accuracy"][-1])


def main(argv: list[str] | None = None) -> None:
    """Run the study and write its summary as JSON to ``--out``."""
    started = time.perf_counter()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20, help="trials in the study (N)")
    parser.add_argument("--epochs", type=int, default=5, help="epochs per trial at most (E)")
    parser.add_argument("--data", required=True, help="a keras-layout MNIST .npz")
    parser.add_argument("--seed", type=int, default=42, help="sampler, split and weights seed")
    parser.add_argument(
        "--batch-size", type=int, default=None, help="fix the batch size (default: searched)"
    )
    parser.add_argument("--out", required=True, help="where to write the JSON result")
    args = parser.parse_args(argv)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    data = load(args.data, args.seed)
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=args.seed),
        pruner=optuna.pruners.MedianPruner(),
    )
    study.optimize(
        lambda trial: objective(trial, data, args.epochs, args.seed, args.batch_size),
        n_trials=args.trials,
    )
    trials = study.trials
    completed = [t for t in trials if t.state == TrialState.COMPLETE]
    best = max(completed, key=lambda t: t.value) if completed else None
    result = {
        "search": "plain Optuna + Keras (JAX)",
        "trials": len(trials),
        "completed": len(completed),
        "pruned": sum(t.state == TrialState.PRUNED for t in trials),
        "failed": sum(t.state == TrialState.FAIL for t in trials),
        "epochs_trained": sum(len(t.intermediate_values) for t in trials),
        "best_val_accuracy": round(best.value, 4) if best else None,
        "best_params": best.params if best else None,
        "best_trial": best.number if best else None,
        "params": [t.params for t in trials],
        "script_s": round(time.perf_counter() - started, 1),
    }
    with open(args.out, "w") as out:
        json.dump(result, out, indent=2)
        out.write("\n")


if __name__ == "__main__":
    main()
