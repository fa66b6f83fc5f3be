"""``python -m mnist_exp.evaluate run_id=<id> | model_uri=<URI> [data=... | data.path=...]``

Re-evaluates a logged model, prints the same report as a training run and records it as a
new MLflow run (tag ``mnist_exp.kind`` = ``evaluation``). By default it scores the test set
its training run used, checked against that run's logged digest
(:mod:`mnist_exp.tracking.run_data`; tag ``evaluated_on=training_run_data``); ``data=`` or
``data.*`` overrides pick other data on purpose (``evaluated_on=explicit``).
"""

from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from mnist_exp.cli.common import run_hydra_command
from mnist_exp.config.schema import ConfigError, EvaluateConfig, validate
from mnist_exp.data.splits import Splits
from mnist_exp.errors import exit_with_error
from mnist_exp.tracking.preflight import check_store
from mnist_exp.tracking.run_data import EVALUATED_ON, EXPLICIT, load_test_data


@hydra.main(version_base="1.3", config_path="pkg://mnist_exp.conf", config_name="evaluate")
def task(cfg: DictConfig) -> float:
    """Validate, load the test set (the training run's own unless ``data=``/``data.*`` is
    overridden) and the model, report; return the test accuracy."""
    try:
        typed = validate(cfg, EvaluateConfig)
        check_store(typed.tracking.uri)
        if (typed.run_id is None) == (typed.model_uri is None):
            raise ConfigError(
                "run_id / model_uri: pass exactly one, e.g. run_id=<id> or "
                "model_uri=models:/<name>/<version>"
            )
        splits, data_tags = load_test_data(typed, HydraConfig.get().overrides.task)
        return evaluate(typed, splits, data_tags)
    except ConfigError as error:
        exit_with_error(str(error))


def evaluate(cfg: DictConfig, splits: Splits, data_tags: dict[str, str] | None = None) -> float:
    """Score the model on ``splits``' test set, print the report, log it if asked (with
    ``data_tags``, which say whose data it is; default ``evaluated_on=explicit``)."""
    import mlflow

    from mnist_exp.results.report import ClassificationReport
    from mnist_exp.tracking import recorder as tracking
    from mnist_exp.tracking.lineage import log_datasets
    from mnist_exp.tracking.model_loading import load_model
    from mnist_exp.training.fit import predict_probabilities

    experiment_id = tracking.open_experiment(cfg.tracking)  # also points MLflow at the store
    uri = cfg.model_uri or f"runs:/{cfg.run_id}/model"
    try:
        model = load_model(uri)  # only the project's own format, in Keras safe mode
    except (mlflow.exceptions.MlflowException, OSError) as error:
        raise ConfigError(f"cannot load model {uri}: {str(error).splitlines()[0]}") from None
    report = ClassificationReport(
        splits.y_test, predict_probabilities(model, splits.x_test), list(splits.class_names)
    )
    print(report.table())
    print(
        f"\ntest accuracy  {report.accuracy:.4f}   (test loss {report.loss:.4f}, "
        f"{len(splits.y_test)} test samples, {splits.variant} {splits.name})"
    )
    if cfg.log:
        tags = {
            **splits.tags(),
            **(data_tags or {EVALUATED_ON: EXPLICIT}),
            "mnist_exp.kind": "evaluation",
            "evaluated_model": uri,
        }
        with tracking.tracked_run(experiment_id, f"evaluate {uri}", tags) as run:
            log_datasets(splits, which=("test",))
            mlflow.log_metrics(report.metrics())
            tracking.log_report(report, splits.x_test, history=None)
        print(f"mlflow run     {run.info.run_id}   (report/ holds the figures and JSON)")
    return report.accuracy


def main() -> None:
    """Run the evaluate command."""
    run_hydra_command(task)

