"""Keep libraries' start-up chatter off the terminal, at its source.

- TensorFlow 2.21 writes absl's "All log messages before absl::InitializeLog()" warning
  and a oneDNN notice, twice each, straight to file descriptor 2 while it is imported.
  They come from C++ static initialisers that run before ``TF_CPP_MIN_LOG_LEVEL`` is
  applied; the one switch that stops them, ``TF_ENABLE_ONEDNN_OPTS=0``, also turns the
  oneDNN kernels off (other numerics, other speed). So :func:`install` adds an import hook
  that runs TensorFlow's import with fd 2 pointed at a temporary file, then writes every
  captured line except those back to stderr: a real error during the import still shows.
- TensorFlow warns about "tf.function retracing" when a sweep's jobs build one model after
  another in one process: expected there, and not the user's to fix.
- matplotlib announces the font cache it builds on its first use; JAX, that it found
  no TPU.
- Optuna colours its log lines; no colours when stderr is not a terminal.
- MLflow prints "Successfully registered model" and "Created version" when it registers a
  model; the run's summary names the version (:func:`registry_notes_filtered`).

Only the standard library is imported here: :func:`install` runs on the package's import.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import io
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr
from types import ModuleType

# Lines TensorFlow's C++ code writes to fd 2 that say nothing to a user of this tool.
NATIVE_NOISE = (
    "All log messages before absl::InitializeLog() is called",
    "oneDNN custom operations are on",
)
RETRACING = "triggered tf.function retracing"
REGISTRY_NOTES = ("Successfully registered model", "Created version")


def install() -> None:
    """Filter the noise listed in this module's docstring (idempotent)."""
    hooked = any(isinstance(finder, _QuietTensorFlowImport) for finder in sys.meta_path)
    if not hooked and "tensorflow" not in sys.modules:
        sys.meta_path.insert(0, _QuietTensorFlowImport())
    tensorflow_logger = logging.getLogger("tensorflow")
    if not any(isinstance(f, _DropRetracing) for f in tensorflow_logger.filters):
        tensorflow_logger.addFilter(_DropRetracing())
    logging.getLogger("matplotlib.font_manager").setLevel(logging.WARNING)
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)  # "no TPU here"
    if sys.stderr is None or not sys.stderr.isatty():
        os.environ.setdefault("NO_COLOR", "1")  # colorlog (Optuna's log lines) reads it


@contextmanager
def native_noise_filtered() -> Iterator[None]:
    """Run the block with file descriptor 2 captured; afterwards write what it captured to
    stderr, less the lines in :data:`NATIVE_NOISE`. A process started without a stderr
    (fd 2 may then be some other file), or one that cannot make a temporary file, runs the
    block unfiltered."""
    try:
        if sys.stderr is None:
            raise OSError("no stderr")
        captured = tempfile.TemporaryFile()  # noqa: SIM115 (closed below, after the block)
    except OSError:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            _write_kept(captured.read().decode(errors="replace"), NATIVE_NOISE)


@contextmanager
def registry_notes_filtered() -> Iterator[None]:
    """Run the block with Python's stderr captured; afterwards write what it captured
    back, less MLflow's :data:`REGISTRY_NOTES`."""
    captured = io.StringIO()
    try:
        with redirect_stderr(captured):
            yield
    finally:
        _write_kept(captured.getvalue(), REGISTRY_NOTES)


def _write_kept(text: str, noise: tuple[str, ...]) -> None:
    """Write the lines of ``text`` that contain none of ``noise`` to stderr."""
    lines = text.splitlines(keepends=True)
    kept = "".join(line for line in lines if not any(phrase in line for phrase in noise))
    if kept:
        sys.stderr.write(kept)
        sys.stderr.flush()


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` like the other finders, and runs its import inside
    :func:`native_noise_filtered`; removes itself once TensorFlow is imported (a mere
    lookup, ``importlib.util.find_spec``, leaves it in place)."""

    def find_spec(
        self, fullname: str, path: object = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        """The real spec of ``tensorflow``, its loader's ``exec_module`` filtered."""
        if fullname != "tensorflow":
            return None
        sys.meta_path.remove(self)  # find the real spec with the other finders
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module

        def quiet_exec_module(module: ModuleType) -> None:
            if self in sys.meta_path:
                sys.meta_path.remove(self)
            with native_noise_filtered():
                exec_module(module)

        spec.loader.exec_module = quiet_exec_module  # type: ignore[method-assign]
        return spec


class _DropRetracing(logging.Filter):
    """Drops TensorFlow's retracing warning."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep every record but the retracing warning."""
        return RETRACING not in record.getMessage()
