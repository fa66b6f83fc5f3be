"""Import Keras without the optional integrations that a training run never uses.

When their packages are installed, Keras imports scikit-learn (for its estimator
wrappers), pandas (to accept DataFrames), Matplotlib (for its plotting utilities) and
requests (for its remote-monitor callback) as it starts: about 1.5 s on the reference
machine, for nothing a run of this project calls (SciPy stays: JAX needs it).
:func:`import_keras` hides them while Keras loads; every one of them imports as usual
afterwards (MLflow's pandas, the report's figures).
"""

from __future__ import annotations

import importlib
import sys

# Packages Keras imports only if they are there (each import guarded by ImportError).
UNUSED_BY_TRAINING = ("sklearn", "pandas", "matplotlib", "requests")


def import_keras() -> None:
    """Import Keras (on the backend ``KERAS_BACKEND`` names) with
    :data:`UNUSED_BY_TRAINING` hidden from it. A Keras that cannot load without one of
    them is imported again with nothing hidden. Does nothing once Keras is loaded."""
    if "keras" in sys.modules:
        return
    hidden = [name for name in UNUSED_BY_TRAINING if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # import raises ImportError
    try:
        importlib.import_module("keras")
    except ImportError:
        _unhide(hidden)
        for name in [name for name in sys.modules if name.split(".")[0] == "keras"]:
            del sys.modules[name]
        importlib.import_module("keras")
    finally:
        _unhide(hidden)


def _unhide(names: list[str]) -> None:
    for name in names:
        if name in sys.modules and sys.modules[name] is None:
            del sys.modules[name]
