"""Keras imports without the optional integrations a run never uses, and they stay
importable afterwards; a Keras that needs one of them still imports (in a fresh process:
this one has Keras already)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

PROBE = """
import json, sys
import mnist_exp.training.keras_import as keras_import
keras_import.UNUSED_BY_TRAINING = tuple(sys.argv[1].split(","))
keras_import.import_keras()
import keras
loaded = [name for name in keras_import.UNUSED_BY_TRAINING if name in sys.modules]
import pandas, sklearn  # importable again, as MLflow and the report need them
print(json.dumps({"backend": keras.backend.backend(), "loaded_with_keras": loaded}))
"""


@pytest.mark.parametrize(
    ("hidden", "loaded"),
    [
        ("sklearn,pandas,matplotlib,requests", []),
        # JAX cannot load without SciPy: Keras is imported again with nothing hidden.
        ("sklearn,scipy", ["sklearn", "scipy"]),
    ],
    ids=["unused", "needed"],
)
def test_keras_loads_without_what_it_only_might_use(hidden, loaded):
    done = subprocess.run(
        [sys.executable, "-c", PROBE, hidden],
        capture_output=True,
        text=True,
        env={**os.environ, "KERAS_BACKEND": "jax"},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"backend": "jax", "loaded_with_keras": loaded}
