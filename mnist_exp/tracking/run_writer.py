"""One MLflow run's writes on a thread of their own, in the order they were asked for.

Training never waits on MLflow unless it must: the first run of a process imports MLflow
and opens the store while its first epoch trains, and a sweep job's report, figures and
model are written while the next job trains. :class:`RunWriter` runs each
write on its own thread (so MLflow's active-run stack, which is per thread, holds only
this run), in order; a write that fails stops the ones after it, and its error is raised
to whoever waits next (:meth:`RunWriter.wait`). :func:`finish_pending` waits for the
writers that were left to finish in the background.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

Result = TypeVar("Result")


class RunWriter:
    """Runs one run's writes, in order, on one thread.

    :meth:`post` queues a write and returns its future; once a write has failed, the
    writes queued after it are skipped and :attr:`failed` holds its error. :meth:`call`
    posts and waits, raising the first failure. With ``held``, nothing is written until
    :meth:`start` (or anything that waits for a write): the process's start-up keeps the
    interpreter to itself until training begins. The thread is not a daemon: a process
    exits only once its writes are done.
    """

    def __init__(self, held: bool = False) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlflow-run")
        self._last: Future | None = None
        self._go = threading.Event()
        if not held:
            self._go.set()
        self.failed: BaseException | None = None

    def start(self) -> None:
        """Let the writes begin (if they were held)."""
        self._go.set()

    def post(self, write: Callable[..., Result], *args: Any) -> Future:
        """Queue ``write(*args)`` after every write posted before it."""

        def guarded() -> Result | None:
            self._go.wait()
            if self.failed is not None:
                return None
            try:
                return write(*args)
            except BaseException as error:
                self.failed = error
                raise

        self._last = self._executor.submit(guarded)
        return self._last

    def call(self, write: Callable[..., Result], *args: Any) -> Result:
        """Run ``write(*args)`` after the writes before it and return its result; raise
        the first write that failed."""
        future = self.post(write, *args)
        self.wait()
        return future.result()

    def wait(self) -> None:
        """Wait for every write posted so far; raise the first that failed."""
        self.start()
        if self._last is not None:
            _result_when_done(self._last)
        if self.failed is not None:
            raise self.failed

    def close(self, last: Callable[[BaseException | None], Result]) -> Future:
        """Queue ``last(first failure or None)``, which runs even after a failure, and let
        the thread go once it is done. Returns its future."""
        self.start()
        future = self._executor.submit(lambda: last(self.failed))
        self._executor.shutdown(wait=False)
        return future


def _result_when_done(future: Future) -> None:
    """Wait for ``future`` without raising its exception (the caller reads
    :attr:`RunWriter.failed`)."""
    future.exception()


# Trainings started in this process, and whether the background writes may all go ahead
# (the sweep is ending): see after_next_training_starts.
_trainings_started = 0
_released = False
_training_news = threading.Condition()
GATE_TIMEOUT_S = 60  # no job waits longer than this on another to start training


def note_training_started() -> None:
    """Say that a job of this process started training (its first epoch is under way)."""
    global _trainings_started
    with _training_news:
        _trainings_started += 1
        _training_news.notify_all()


def after_next_training_starts() -> Callable[[], None]:
    """A write that waits until the next job of this process starts training (or until
    :func:`finish_pending`): the report, figures and model of a sweep job then share the
    CPU with the next job's training, which leaves the interpreter free, rather than with
    its start-up, which needs it."""
    with _training_news:
        seen = _trainings_started

    def wait() -> None:
        with _training_news:
            _training_news.wait_for(
                lambda: _trainings_started > seen or _released, timeout=GATE_TIMEOUT_S
            )

    return wait


# Run endings left to finish in the background (a sweep job's report, model and end), by
# run id, with what to call the run in an error message.
_pending: dict[str, tuple[Future, str]] = {}
_pending_lock = threading.Lock()


def finish_later(ending: Future, run_id: str, name: str) -> None:
    """Let ``ending`` (a :meth:`RunWriter.close` future) of run ``run_id`` finish in the
    background; :func:`finish_pending` waits for it."""
    with _pending_lock:
        _pending[run_id] = (ending, name)


def finish_pending() -> int:
    """Wait for every run ending left to finish in the background; print one line for
    each that failed (its run ends FAILED with the error tagged). Returns how many failed."""
    global _released
    with _training_news:
        _released = True
        _training_news.notify_all()
    with _pending_lock:
        waiting = list(_pending.values())
        _pending.clear()
    failures = 0
    for ending, name in waiting:
        error = ending.exception()
        if error is not None:
            failures += 1
            print(f"error: {name}: {error}", file=sys.stderr)
    with _training_news:
        _released = False
    return failures


def finishing_runs() -> set[str]:
    """The runs whose endings are still being written in the background."""
    with _pending_lock:
        return {run_id for run_id, (ending, _) in _pending.items() if not ending.done()}
