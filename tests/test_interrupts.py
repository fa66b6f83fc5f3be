"""Ctrl-C and SIGTERM: a signal is never lost, even when library code swallows the
``KeyboardInterrupt`` it raised (TensorFlow's C++ fast path can)."""

from __future__ import annotations

import contextlib
import os
import signal

import pytest

from mnist_exp import interrupts


@pytest.fixture
def handler_installed():
    """The project's handler for SIGINT and SIGTERM, the previous ones restored after."""
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    interrupts.install()
    yield
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def test_a_swallowed_interrupt_is_raised_again_at_the_next_check(handler_installed):
    with contextlib.suppress(KeyboardInterrupt):  # what a library that clears it does
        os.kill(os.getpid(), signal.SIGTERM)  # the handler runs in this thread, here
    with pytest.raises(KeyboardInterrupt, match=f"signal {signal.SIGTERM}"):
        interrupts.raise_if_received()


def test_an_interrupt_during_a_write_waits_for_the_write(handler_installed):
    written = []
    with pytest.raises(KeyboardInterrupt), interrupts.deferred():
        os.kill(os.getpid(), signal.SIGINT)
        interrupts.raise_if_received()  # inside a write: not yet
        written.append("all of it")
    assert written == ["all of it"]


def test_no_signal_no_interrupt(handler_installed):
    interrupts.raise_if_received()
