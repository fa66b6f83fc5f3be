"""``python -m mnist_exp.evaluate run_id=<id> | model_uri=<URI> [data=... | data.path=...]``

Re-evaluates a logged model, prints the same report as a training run and records it as a
new MLflow run (tag ``mnist_exp.kind`` = ``evaluation``); the work is
:func:`mnist_exp.pipeline.evaluation.evaluate_logged_model`'s.
"""

from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from mnist_exp.cli.common import run_hydra_command
from mnist_exp.config.schema import ConfigError, EvaluateConfig, validate
from mnist_exp.errors import exit_with_error
from mnist_exp.pipeline.evaluation import evaluate_logged_model
from mnist_exp.tracking.preflight import check_store


@hydra.main(version_base="1.3", config_path="pkg://mnist_exp.conf", config_name="evaluate")
def task(cfg: DictConfig) -> float:
    """Validate, evaluate and report; return the test accuracy. A config, data or model
    error ends the process with one line and exit code 2."""
    try:
        typed = validate(cfg, EvaluateConfig)
        check_store(typed.tracking.uri)
        return evaluate_logged_model(typed, HydraConfig.get().overrides.task)
    except ConfigError as error:
        exit_with_error(str(error))


def main() -> None:
    """Run the evaluate command."""
    run_hydra_command(task, config_name="evaluate")
