"""The divergence check: a loss that is not finite, or far above a uniform guess's at
chance accuracy, stops training; a slow start does not."""

from __future__ import annotations

import math

import keras
import pytest

from mnist_exp.training.fit import StopOnDivergence, TrainingAtChance, TrainingDiverged


@pytest.fixture
def check() -> StopOnDivergence:
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(10, activation="softmax")])
    callback = StopOnDivergence()
    callback.set_model(model)
    return callback


@pytest.mark.parametrize("loss", [math.nan, math.inf])
def test_a_loss_that_is_not_finite_stops_training(check, loss):
    with pytest.raises(TrainingDiverged, match="loss became") as raised:
        check.on_epoch_end(0, {"loss": loss, "accuracy": 0.1})
    assert raised.value.reason == "nan_loss"


def test_a_loss_far_above_chance_at_chance_accuracy_stops_training(check):
    with pytest.raises(TrainingAtChance, match=r"epoch 2 is far above a uniform guess's 2\.303"):
        check.on_epoch_end(1, {"loss": 14.37, "accuracy": 0.102})
    assert TrainingAtChance.reason == "diverged"


@pytest.mark.parametrize(
    "logs",
    [
        {"loss": 2.31, "accuracy": 0.1},  # a slow start: a uniform guess's loss
        {"loss": 5.0, "accuracy": 0.4},  # overconfident, but learning
        {"loss": 0.1, "accuracy": 0.98},
        {"accuracy": 0.1},  # no loss logged
    ],
)
def test_a_slow_or_healthy_epoch_trains_on(check, logs):
    check.on_epoch_end(0, logs)
