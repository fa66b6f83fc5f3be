"""Ctrl-C and SIGTERM as ``KeyboardInterrupt``, held back while an MLflow write is in flight.

An interrupt that lands inside a database write can leave the SQLite store mid-transaction
and the run's final status unwritable. :func:`install` routes SIGINT and SIGTERM through
one handler; inside :func:`deferred` the signal is only noted, and raised as soon as the
write is done (a few milliseconds later).

Library code can swallow the ``KeyboardInterrupt``: TensorFlow's C++ fast path checks for
signals while it executes an op and may clear the error to retry on its slow path. So a
signal is also remembered, and :func:`raise_if_received` (called after every epoch and
before a run is recorded as finished) raises it again.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_depth = 0
_pending: int | None = None
_received: int | None = None  # the last signal this process got, delivered or not


def install() -> None:
    """Make SIGINT and SIGTERM raise ``KeyboardInterrupt`` (main thread only; idempotent)."""
    if threading.current_thread() is threading.main_thread():
        global _received
        _received = None
        signal.signal(signal.SIGINT, _handler)
        signal.signal(signal.SIGTERM, _handler)


def _handler(signum: int, frame: object) -> None:
    global _pending, _received
    _received = signum
    if _depth:
        _pending = signum
        return
    raise KeyboardInterrupt(f"signal {signum}")


@contextmanager
def deferred() -> Iterator[None]:
    """Hold interrupts until the block ends, then raise the one that arrived, if any.

    Only the main thread gets signals: on any other thread (a run's MLflow writer) the
    block runs as it is, and no interrupt is raised there."""
    global _depth, _pending
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if not _depth and _pending is not None:
            signum, _pending = _pending, None
            raise KeyboardInterrupt(f"signal {signum}")


class RunInterrupted(KeyboardInterrupt):
    """An interrupt that stopped a run, with what to tell the user (``hint``: the run, and
    how to continue it)."""

    def __init__(self, hint: str) -> None:
        super().__init__(hint)
        self.hint = hint


def raise_if_received() -> None:
    """Raise ``KeyboardInterrupt`` if a signal arrived since :func:`install`, even one whose
    exception some library swallowed (outside a :func:`deferred` block, on the main
    thread only)."""
    if threading.current_thread() is not threading.main_thread():
        return
    if _received is not None and not _depth:
        raise KeyboardInterrupt(f"signal {_received}")
