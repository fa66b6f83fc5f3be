"""One experiment, start to finish: model, training, evaluation and its MLflow record."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import keras
import mlflow
from omegaconf import DictConfig

from mnist_exp import STARTED_AT
from mnist_exp.data.splits import Splits
from mnist_exp.pipeline.resume import CHECKPOINTS, Checkpoint
from mnist_exp.pipeline.sweep import PARAM_COUNT_KEYS, STEPS_RUN_KEY, sweep_parent_run
from mnist_exp.results.leaderboard import OBJECTIVE
from mnist_exp.results.report import ClassificationReport
from mnist_exp.tracking import recorder as tracking
from mnist_exp.tracking.lineage import log_datasets
from mnist_exp.training.devices import device_tags
from mnist_exp.training.fit import (
    EpochMetricsCallback,
    FitResult,
    SaveCheckpoint,
    fit,
    load_checkpoint_model,
    predict_probabilities,
    steps_per_epoch,
    steps_per_execution,
)
from mnist_exp.training.model import build_model, compile_model, parameter_counts


@dataclass(frozen=True)
class JobInfo:
    """What the launcher knows about this job (Hydra fills it; tests may leave it empty)."""

    overrides: list[str] = field(default_factory=list)
    sweep: str | None = None  # the sweep's folder, when this job is part of a multirun
    job_num: int | None = None
    output_dir: str | None = None
    parallel_jobs: int = 1  # jobs running at once on this machine (joblib or Ray launcher)


def run_experiment(
    cfg: DictConfig, splits: Splits, job: JobInfo, resume_from: Checkpoint | None = None
) -> float:
    """Train and evaluate the configured model on ``splits``, record it in MLflow, and
    return the validation accuracy (the objective sweepers maximise).

    With ``resume_from``, the interrupted run is reopened (its params stay as logged) and
    training continues from the checkpoint's epoch.
    """
    if keras.backend.backend() == "jax":
        from mnist_exp.training.jax_epochs import keep_tensorflow_out

        keep_tensorflow_out()
    experiment_id = tracking.open_experiment(cfg.tracking)
    if resume_from is None:
        parent_run_id = sweep_parent_run() if job.sweep else None
        run_context = tracking.tracked_run(
            experiment_id, cfg.tracking.run_name, _tags(splits, job), parent_run_id
        )
    else:
        run_context = tracking.tracked_run(experiment_id, None, {}, run_id=resume_from.run_id)
    with run_context as run:
        if resume_from is None:
            log_datasets(splits)
        threads = configure_threads(cfg.train, job.parallel_jobs)
        mlflow.set_tags(
            {
                "keras.backend": keras.backend.backend(),
                **device_tags(keras.backend.backend()),
                **{f"threads.{pool}": str(count) for pool, count in threads.items()},
            }
        )
        if cfg.train.deterministic and keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            tf.config.experimental.enable_op_determinism()
        keras.utils.set_random_seed(cfg.seed)
        keras.mixed_precision.set_global_policy(cfg.train.precision)
        if resume_from is None:
            model = _new_model(cfg, splits, job)
        else:
            model = load_checkpoint_model(resume_from)
            mlflow.set_tag("resumed_after_epoch", str(resume_from.epoch))
        clock = EpochMetricsCallback(tracking.log_epoch)
        callbacks: list = [clock]
        checkpoints = resume_from.folder if resume_from else _checkpoint_folder(job)
        if cfg.train.checkpoint and checkpoints is not None:
            callbacks.append(SaveCheckpoint(checkpoints, run.info.run_id, resume_from))
        fitted = fit(model, splits, cfg.train, callbacks, cfg.seed, resume_from)
        mlflow.log_metrics(_timings(clock))
        report = ClassificationReport(
            splits.y_test, predict_probabilities(model, splits.x_test), list(splits.class_names)
        )
        mlflow.log_metrics({**report.metrics(), OBJECTIVE: fitted.val_accuracy})
        tracking.log_report(report, splits.x_test, fitted.history)
        if cfg.tracking.log_model:
            # In a sweep, the sweep registers its best child instead of every job.
            register_as = None if job.sweep else cfg.tracking.register_as
            tracking.log_model(model, register_as)
    print(_summary(report, fitted, run.info.run_id, cfg))
    return fitted.val_accuracy


def _timings(clock: EpochMetricsCallback) -> dict[str, float]:
    """Where the time went: start-up, training, and MLflow's share of each epoch."""
    timings = {"fit_seconds": time.perf_counter() - clock.started_at}
    timings["startup_seconds"] = clock.started_at - STARTED_AT
    if clock.logging_seconds:
        timings["mlflow_seconds_per_epoch"] = sum(clock.logging_seconds) / len(
            clock.logging_seconds
        )
    return timings


def _new_model(cfg: DictConfig, splits: Splits, job: JobInfo) -> keras.Model:
    """Build and compile the configured model and log its config and summary."""
    model = build_model(
        cfg.model,
        input_dim=splits.x_train.shape[1],
        num_classes=len(splits.class_names),
        augment=cfg.data.augment,
    )
    steps = steps_per_epoch(splits, cfg.train.batch_size)
    grouped = steps_per_execution(cfg.train, steps)
    compile_model(model, cfg.optimizer, grouped, steps, cfg.train.epochs)
    derived = dict(zip(PARAM_COUNT_KEYS, parameter_counts(model), strict=True))
    tracking.log_config(cfg, job.overrides, {**derived, STEPS_RUN_KEY: grouped})
    tracking.log_summary(model)
    return model


def _checkpoint_folder(job: JobInfo) -> Path | None:
    return Path(job.output_dir) / CHECKPOINTS if job.output_dir else None


def configure_threads(train_cfg: DictConfig, parallel_jobs: int) -> dict[str, int]:
    """Set TensorFlow's thread pools so that parallel jobs x threads ~ cores.

    0 means automatic: TensorFlow's own default for a job alone; with N parallel jobs,
    cores // N intra-op threads and 1 inter-op thread. A reused worker process keeps the
    pools it started with (TensorFlow cannot change them once running). On the JAX
    backend these pools do not exist (and TensorFlow is not imported): returns {}.
    """
    if keras.backend.backend() != "tensorflow":
        return {}
    import tensorflow as tf

    cores = os.cpu_count() or 1
    parallel = parallel_jobs > 1
    intra = train_cfg.intra_op_threads or (max(1, cores // parallel_jobs) if parallel else 0)
    inter = train_cfg.inter_op_threads or (1 if parallel else 0)
    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
        tf.config.threading.set_inter_op_parallelism_threads(inter)
    except RuntimeError:
        pass  # already initialised in this process
    return {
        "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
    }


def _tags(splits: Splits, job: JobInfo) -> dict[str, str]:
    tags = {**splits.tags(), **_ray_tags()}
    commit = tracking.git_commit()
    if commit:
        tags["git_commit"] = commit
    if job.sweep:
        tags["sweep"] = job.sweep
        tags["sweep.job_num"] = str(job.job_num)
    if job.output_dir:
        tags["output_dir"] = job.output_dir
    return tags


def _ray_tags() -> dict[str, str]:
    """The Ray node, when a Ray worker runs the job (the host is tagged with the run's
    owner, see :mod:`mnist_exp.tracking.owner`)."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        return {"ray.node_id": ray.get_runtime_context().get_node_id()}
    return {}


def _summary(report: ClassificationReport, fitted: FitResult, run_id: str, cfg: DictConfig) -> str:
    return "\n".join(
        [
            "",
            report.table(),
            "",
            f"test accuracy  {report.accuracy:.4f}   (test loss {report.loss:.4f}, "
            f"val accuracy {fitted.val_accuracy:.4f}, {fitted.epochs_run} epochs)",
            f"mlflow run     {run_id}   (experiment '{cfg.tracking.experiment}')",
            f"open the UI    {tracking.ui_command(cfg.tracking.uri)}",
        ]
    )
