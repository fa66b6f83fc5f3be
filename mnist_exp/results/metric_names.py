"""The names a run's metrics are logged under, chosen for the MLflow UI.

MLflow 3.17's run page puts the charts in one section per name prefix (the text before the
last ``/``), prefixed sections first in alphabetical order, each chart titled by the rest;
a metric logged at steps is drawn as a line, a one-value metric as a bar. So:

- ``epoch/``: the per-epoch curves, first: ``loss``, ``accuracy``, ``val_loss``,
  ``val_accuracy``, ``seconds`` (the epoch's training and validation) and, when a schedule
  changes it, ``learning_rate``;
- ``final/``: the scores of the model the run ended with: ``val_accuracy`` (what sweeps
  rank by), ``test_accuracy``, ``test_loss``; and ``final/test_f1/<class>``;
- ``time/``: where the time went (:data:`TIMINGS`);
- ``sweep/``: on a sweep's parent run, its counts and its best child's scores.

Runs logged before these names (``final_val_accuracy``, ``test_accuracy``) are still read:
:func:`read` falls back to the old name.
"""

from __future__ import annotations

from collections.abc import Mapping

EPOCH = "epoch/"
OBJECTIVE = "final/val_accuracy"  # what sweeps rank by (never test accuracy)
TEST_ACCURACY = "final/test_accuracy"
TEST_LOSS = "final/test_loss"
TEST_F1 = "final/test_f1/"  # + the class name
TIME = "time/"
SWEEP = "sweep/"

FIRST_LOGGED = ("val_accuracy",)
# time/ metrics, and what each measures (docs/mlflow-ui.md lists them).
TIMINGS = {
    "startup_seconds": "from the job's start to the start of training: for a process's "
    "first job its launch (Python, TensorFlow or JAX, data, the model), for a later job "
    "of a sweep when the launcher handed it over",
    "fit_seconds": "training, validation and per-epoch logging, all epochs",
    "overhead_seconds": "the job's time outside training: its wall time (to the end of its "
    "record; in a sweep, to when it handed the rest to the background) less fit_seconds",
    "mlflow_seconds_per_epoch": "the share of each epoch spent logging it to MLflow (the "
    "first epoch's includes waiting for the run's record, which opens while it trains)",
}

# Names used before, by the new name, so that older runs still rank and resume.
_LEGACY = {OBJECTIVE: "final_val_accuracy", TEST_ACCURACY: "test_accuracy"}


def epoch_metrics(logs: Mapping[str, float]) -> dict[str, float]:
    """One epoch's values (Keras's names, ``seconds``, ``learning_rate``) as metrics,
    validation accuracy first: the UI's compare view plots the metric a run logged first."""
    order = sorted(logs, key=lambda name: name not in FIRST_LOGGED)
    return {f"{EPOCH}{name}": logs[name] for name in order}


def read(metrics: Mapping[str, float], name: str) -> float | None:
    """The metric ``name`` of a run (its older name if the run predates it), or None."""
    value = metrics.get(name)
    if value is None and name in _LEGACY:
        value = metrics.get(_LEGACY[name])
    return value
