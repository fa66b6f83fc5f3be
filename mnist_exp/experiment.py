"""One experiment, start to finish: model, training, evaluation and its MLflow record."""

from __future__ import annotations

from dataclasses import dataclass, field

import keras
import mlflow
from omegaconf import DictConfig

from mnist_exp import tracking
from mnist_exp.data import NUM_CLASSES, Splits
from mnist_exp.model import build_model, compile_model, parameter_counts
from mnist_exp.train import EpochMetricsCallback, TrainResult, fit_and_evaluate


@dataclass(frozen=True)
class JobInfo:
    """What the launcher knows about this job (Hydra fills it; tests may leave it empty)."""

    overrides: list[str] = field(default_factory=list)
    sweep: str | None = None  # the sweep's folder, when this job is part of a multirun
    job_num: int | None = None
    output_dir: str | None = None


def run_experiment(cfg: DictConfig, splits: Splits, job: JobInfo) -> float:
    """Train and evaluate the configured model on ``splits``, record it in MLflow, and
    return the validation accuracy (the objective sweepers maximise)."""
    keras.utils.set_random_seed(cfg.seed)
    model = build_model(cfg.model, input_dim=splits.x_train.shape[1], num_classes=NUM_CLASSES)
    compile_model(model, cfg.optimizer)
    experiment_id = tracking.open_experiment(cfg.tracking)
    with tracking.tracked_run(experiment_id, cfg.tracking.run_name, _tags(splits, job)) as run:
        counts = parameter_counts(model)
        tracking.log_config(
            cfg, job.overrides, {f"model.{name}": count for name, count in counts.items()}
        )
        tracking.log_summary(model)
        result = fit_and_evaluate(
            model, splits, cfg.train, [EpochMetricsCallback(tracking.log_epoch)]
        )
        mlflow.log_metrics({"test_loss": result.test_loss, "test_accuracy": result.test_accuracy})
        if cfg.tracking.log_model:
            tracking.log_model(model)
    print(_summary(result, run.info.run_id, cfg))
    return result.val_accuracy


def _tags(splits: Splits, job: JobInfo) -> dict[str, str]:
    tags = {
        "dataset": splits.name,
        "dataset.variant": splits.variant,
        "dataset.source": splits.source,
        **{f"dataset.{split}_samples": str(n) for split, n in splits.sizes().items()},
    }
    commit = tracking.git_commit()
    if commit:
        tags["git_commit"] = commit
    if job.sweep:
        tags["sweep"] = job.sweep
        tags["sweep.job_num"] = str(job.job_num)
    if job.output_dir:
        tags["output_dir"] = job.output_dir
    return tags


def _summary(result: TrainResult, run_id: str, cfg: DictConfig) -> str:
    return "\n".join(
        [
            "",
            f"test accuracy  {result.test_accuracy:.4f}   (test loss {result.test_loss:.4f}, "
            f"val accuracy {result.val_accuracy:.4f}, {result.epochs_run} epochs)",
            f"mlflow run     {run_id}   (experiment '{cfg.tracking.experiment}')",
            f"open the UI    {tracking.ui_command(cfg.tracking.uri)}",
        ]
    )
