"""A real run end to end in-process: Keras training on real digits into a temp MLflow store."""

from __future__ import annotations

import keras
import mlflow
import numpy as np
import pytest

from mnist_exp.data.splits import load_splits
from mnist_exp.pipeline.one_run import JobInfo, run_one
from mnist_exp.pipeline.sweep import PARAM_COUNT_KEYS
from mnist_exp.results.metric_names import OBJECTIVE
from mnist_exp.tracking.provenance import (
    COMMIT_TAG,
    DIFF_ARTIFACT,
    DIRTY_TAG,
    REQUIREMENTS_ARTIFACT,
    requirements_text,
    source_provenance,
)
from mnist_exp.tracking.recorder import CONFIGURED, RunRecorder, flatten
from mnist_exp.training.fit import fit, float32_value
from mnist_exp.training.model import build_model, compile_model

EPOCH_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")
# Settings that code resolves before training: logged as they ran, configured value beside.
RESOLVED = (
    "train.backend",
    "train.steps_per_execution",
    "train.device",
    "train.intra_op_threads",
    "train.inter_op_threads",
)


@pytest.fixture
def finished_run(make_config, store, mnist_npz):
    """One real 2-epoch run of the reference model; returns (client, run, config, splits)."""
    overrides = [f"data.path={mnist_npz}", "train.epochs=2", *store.overrides]
    cfg = make_config(*overrides)
    splits = load_splits(cfg.data, cfg.train.validation_split, cfg.seed)
    objective = run_one(cfg, splits, JobInfo(overrides=overrides))
    (run,) = store.runs()
    return store.client(), run, cfg, splits, objective


def test_run_records_params_metrics_tags_and_artifacts(finished_run):
    client, run, cfg, _, objective = finished_run
    assert run.info.status == "FINISHED"

    params = run.data.params
    configured = {f"{key}{CONFIGURED}" for key in RESOLVED}
    assert set(params) == set(flatten(cfg)) | {*PARAM_COUNT_KEYS} | configured
    assert params["model.total_params"] == "252170"
    assert params["model.hidden_units"] == "[256, 128, 128]"
    assert params["optimizer.name"] == "adam"

    for name in EPOCH_METRICS:
        history = client.get_metric_history(run.info.run_id, f"epoch/{name}")
        assert [point.step for point in history] == [1, 2], name
    assert 0.0 <= run.data.metrics["final/test_accuracy"] <= 1.0
    assert run.data.metrics["final/test_loss"] > 0
    assert objective == run.data.metrics["epoch/val_accuracy"] == run.data.metrics[OBJECTIVE]

    tags = run.data.tags
    assert tags["dataset"] == "mnist" and tags["dataset.variant"] == "full"
    assert (tags["dataset.train_samples"], tags["dataset.val_samples"]) == ("540", "60")
    assert tags["dataset.test_samples"] == "200"
    # The code's provenance in MLflow's tag names (the old git_commit tag is gone).
    assert tags.get(COMMIT_TAG) == source_provenance().tags.get(COMMIT_TAG)
    assert "git_commit" not in tags

    artifacts = {item.path for item in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "overrides.yaml", "model_summary.txt", "environment"} <= artifacts
    requirements = mlflow.artifacts.load_text(f"{run.info.artifact_uri}/{REQUIREMENTS_ARTIFACT}")
    assert requirements == requirements_text()
    code = {item.path for item in client.list_artifacts(run.info.run_id, "code")}
    assert (DIFF_ARTIFACT in code) == (tags.get(DIRTY_TAG) == "true")
    config_text = mlflow.artifacts.load_text(f"{run.info.artifact_uri}/config.yaml")
    assert "hidden_units:" in config_text and "learning_rate: 0.001" in config_text
    summary = mlflow.artifacts.load_text(f"{run.info.artifact_uri}/model_summary.txt")
    assert "252,170" in summary


@pytest.mark.slow
def test_logged_model_predicts_probabilities_through_pyfunc(finished_run):
    _, run, _, splits, _ = finished_run
    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    probabilities = np.asarray(model.predict(splits.x_test[:16]))
    assert probabilities.shape == (16, 10)
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)
    # The reloaded model is the trained one: it scores like the run's test accuracy.
    all_predictions = np.asarray(model.predict(splits.x_test)).argmax(axis=1)
    accuracy = float(np.mean(all_predictions == splits.y_test))
    assert accuracy == pytest.approx(run.data.metrics["final/test_accuracy"], abs=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("error", "status"), [(RuntimeError("boom"), "FAILED"), (KeyboardInterrupt(), "KILLED")]
)
def test_a_run_that_raises_never_stays_running(make_config, store, error, status):
    cfg = make_config(*store.overrides)
    with pytest.raises(type(error)), RunRecorder.start(cfg.tracking) as recorder:
        raise error
    recorded = store.client().get_run(recorder.run_id)
    assert recorded.info.status == status
    if status == "FAILED":
        assert recorded.data.tags["error"] == "RuntimeError: boom"


def test_logged_params_are_the_values_keras_ran_with(make_config, store, mnist_npz, monkeypatch):
    """A number above an epoch's steps is capped and ``auto`` threads are chosen before
    training: read back from the store, each param is what the compiled model and
    TensorFlow ran with, and the configured value is kept beside it."""
    import tensorflow as tf

    ran = {}
    keras_fit = keras.Model.fit

    def spy(model, *args, **kwargs):
        ran["steps_per_execution"] = model.steps_per_execution
        ran["intra_op"] = tf.config.threading.get_intra_op_parallelism_threads()
        ran["inter_op"] = tf.config.threading.get_inter_op_parallelism_threads()
        return keras_fit(model, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "fit", spy)
    overrides = [
        f"data.path={mnist_npz}",  # 540 training images: 17 steps of 32 per epoch
        "train.epochs=1",
        "train.steps_per_execution=64",
        "train.verbose=0",
        "tracking.log_model=false",
        *store.overrides,
    ]
    cfg = make_config(*overrides)
    splits = load_splits(cfg.data, cfg.train.validation_split, cfg.seed)
    run_one(cfg, splits, JobInfo(overrides=overrides))

    (run,) = store.runs()
    params = store.client().get_run(run.info.run_id).data.params
    assert ran["steps_per_execution"] == 17  # capped at an epoch
    assert params["train.steps_per_execution"] == str(ran["steps_per_execution"])
    assert params["train.steps_per_execution.configured"] == "64"
    assert params["train.intra_op_threads"] == str(ran["intra_op"])
    assert params["train.inter_op_threads"] == str(ran["inter_op"])
    assert params["train.intra_op_threads.configured"] == "0"  # auto
    assert params["train.device"] == run.data.tags["device.kind"] == "cpu"
    assert params["train.device.configured"] == "auto"
    assert params["train.batch_size"] == "32"  # used as configured, not resolved


def test_early_stopping_keeps_the_best_epoch(make_config, mnist_npz):
    cfg = make_config(
        f"data.path={mnist_npz}",
        "train.epochs=8",
        "train.early_stopping=true",
        "train.patience=1",
        "optimizer.learning_rate=0.02",  # noisy enough to stop early (after epoch 5 here)
        "train.verbose=0",
    )
    splits = load_splits(cfg.data, cfg.train.validation_split, cfg.seed)
    keras.utils.set_random_seed(cfg.seed)
    model = build_model(cfg.model)
    compile_model(model, cfg.optimizer)
    result = fit(model, splits, cfg.train, callbacks=[], seed=cfg.seed)
    val_losses = result.history["val_loss"]
    assert result.epochs_run == len(val_losses) < 8
    best = val_losses.index(min(val_losses))
    assert result.val_accuracy == float32_value(result.history["val_accuracy"][best])
    # The restored weights are the best epoch's: evaluating them gives its val loss.
    restored_loss, _ = model.evaluate(splits.x_val, splits.y_val, verbose=0)
    assert restored_loss == pytest.approx(min(val_losses), rel=1e-4)
