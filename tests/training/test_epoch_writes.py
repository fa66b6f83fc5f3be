"""An epoch's record is written whole: its metrics and its checkpoint both, or neither,
whenever Ctrl-C lands. (A Ctrl-C between the two left a logged epoch without its
checkpoint: the resumed run trained and logged that epoch a second time.)"""

from __future__ import annotations

import os
import signal

import keras
import pytest

from mnist_exp import interrupts
from mnist_exp.training.fit import EpochMetricsCallback


@pytest.fixture
def handlers_restored():
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    interrupts.install()
    yield
    interrupts.install()  # forgets this test's Ctrl-C
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def test_a_ctrl_c_right_after_an_epoch_is_logged_waits_for_its_checkpoint(handlers_restored):
    written: list[tuple[str, int]] = []

    def log(metrics: dict[str, float], step: int) -> None:
        written.append(("logged", step))
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C lands between the two writes

    def checkpoint(epoch: int, logs: dict | None) -> None:
        written.append(("checkpointed", epoch + 1))

    callback = EpochMetricsCallback(log, log_learning_rate=False, write_with=checkpoint)
    callback.set_model(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]))
    callback.on_train_begin()
    callback.on_epoch_begin(2)
    with pytest.raises(KeyboardInterrupt):
        callback.on_epoch_end(2, {"loss": 0.5})
    assert written == [("logged", 3), ("checkpointed", 3)]


def test_an_epoch_a_ctrl_c_cut_into_is_neither_logged_nor_checkpointed(handlers_restored):
    written: list[str] = []
    callback = EpochMetricsCallback(
        lambda metrics, step: written.append("logged"),
        log_learning_rate=False,
        write_with=lambda epoch, logs: written.append("checkpointed"),
    )
    callback.set_model(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]))
    callback.on_train_begin()
    callback.on_epoch_begin(0)
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)  # during the epoch's training
    with pytest.raises(KeyboardInterrupt):  # some library swallowed it; it is raised again
        callback.on_epoch_end(0, {"loss": 0.5})
    assert written == []
