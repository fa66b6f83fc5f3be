"""``python -m mnist_exp.evaluate run_id=<id> | model_uri=<URI> [data.path=...]``

Re-evaluates a logged model on the test set of a chosen data config, prints the same
report as a training run and records it as a new MLflow run (tag ``mnist_exp.kind`` =
``evaluation``), so a model can be checked against new data later.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from mnist_exp.cli import run_hydra_command
from mnist_exp.config import ConfigError, EvaluateConfig, validate
from mnist_exp.data import Splits, load_splits
from mnist_exp.errors import exit_with_error
from mnist_exp.preflight import check_tracking_server


@hydra.main(version_base="1.3", config_path="pkg://mnist_exp.conf", config_name="evaluate")
def task(cfg: DictConfig) -> float:
    """Validate, load the test set and the model, report; return the test accuracy."""
    try:
        typed = validate(cfg, EvaluateConfig)
        check_tracking_server(typed.tracking.uri)
        if (typed.run_id is None) == (typed.model_uri is None):
            raise ConfigError(
                "run_id / model_uri: pass exactly one, e.g. run_id=<id> or "
                "model_uri=models:/<name>/<version>"
            )
        # Only the test set is used; it does not depend on the validation split.
        splits = load_splits(typed.data, validation_split=0.1, seed=typed.seed)
        return evaluate(typed, splits)
    except ConfigError as error:
        exit_with_error(str(error))


def evaluate(cfg: DictConfig, splits: Splits) -> float:
    """Score the model on ``splits``' test set, print the report, log it if asked."""
    import mlflow

    from mnist_exp import tracking
    from mnist_exp.lineage import log_datasets
    from mnist_exp.report import ClassificationReport
    from mnist_exp.train import predict_probabilities

    experiment_id = tracking.open_experiment(cfg.tracking)  # also points MLflow at the store
    uri = cfg.model_uri or f"runs:/{cfg.run_id}/model"
    try:
        model = tracking.load_model(uri)
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
        tags = {**splits.tags(), "mnist_exp.kind": "evaluation", "evaluated_model": uri}
        with tracking.tracked_run(experiment_id, f"evaluate {uri}", tags) as run:
            log_datasets(splits, which=("test",))
            mlflow.log_metrics(report.metrics())
            tracking.log_report(report, splits.x_test, history=None)
        print(f"mlflow run     {run.info.run_id}   (report/ holds the figures and JSON)")
    return report.accuracy


def main() -> None:
    """Run the evaluate command."""
    run_hydra_command(task)


if __name__ == "__main__":
    main()
