"""Score a model on a test set: the end of every training run, and ``python -m
mnist_exp.evaluate``, which re-evaluates a logged model and records it as a run of its own.

By default ``evaluate`` scores the test set its training run used, checked against that
run's logged digest (:mod:`mnist_exp.tracking.run_data`; tag
``evaluated_on=training_run_data``); ``data=`` or ``data.*`` overrides pick other data on
purpose (``evaluated_on=explicit``). Keras and MLflow are imported only once the config is
known to be good.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from omegaconf import DictConfig

from mnist_exp.config.schema import ConfigError
from mnist_exp.data.splits import Splits
from mnist_exp.results.report import ClassificationReport
from mnist_exp.results.summary import evaluation_run_line, evaluation_summary
from mnist_exp.tracking.run_data import evaluated_model, load_test_data
from mnist_exp.training.devices import BACKEND_TAG

if TYPE_CHECKING:
    import keras


def score_test_set(model: keras.Model, splits: Splits) -> ClassificationReport:
    """The report of ``model``'s predictions on the test set of ``splits``."""
    from mnist_exp.training.inference import predict_probabilities

    return ClassificationReport(
        splits.y_test, predict_probabilities(model, splits.x_test), list(splits.class_names)
    )


def evaluate_logged_model(cfg: DictConfig, overrides: Sequence[str]) -> float:
    """Evaluate the model ``cfg`` (an ``EvaluateConfig``) names by ``run_id`` or
    ``model_uri`` on its training run's test set, or on the config's data if Hydra's task
    ``overrides`` choose it; print and log the report. Return the test accuracy."""
    if (cfg.run_id is None) == (cfg.model_uri is None):
        raise ConfigError(
            "run_id / model_uri: pass exactly one, e.g. run_id=<id> or "
            "model_uri=models:/<name>/<version>"
        )
    splits, data_tags = load_test_data(cfg, overrides)
    return _evaluate(cfg, splits, data_tags)


def _evaluate(cfg: DictConfig, splits: Splits, data_tags: dict[str, str]) -> float:
    """Score the model on ``splits``' test set, print the report, and log it as a run of
    its own if asked, tagged with ``data_tags`` (whose data it is)."""
    import keras

    from mnist_exp.tracking.model_loading import load_model_from_store
    from mnist_exp.tracking.recorder import RunRecorder
    from mnist_exp.tracking.run_table import KIND_TAG

    uri = evaluated_model(cfg)
    # Only the project's own format loads, in Keras safe mode.
    model = load_model_from_store(uri, cfg.tracking.uri)
    report = score_test_set(model, splits)
    print(evaluation_summary(report, splits))
    if cfg.log:
        tags = {
            **splits.tags(),
            **data_tags,
            KIND_TAG: "evaluation",
            "evaluated_model": uri,
            BACKEND_TAG: keras.backend.backend(),  # may differ from the training run's
        }
        with RunRecorder.start(cfg.tracking, f"evaluate {uri}", tags) as recorder:
            recorder.log_datasets(splits, which=("test",))
            recorder.log_report(report, splits.x_test)
        print(evaluation_run_line(recorder.run_id))
    return report.accuracy
