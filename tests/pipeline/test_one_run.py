"""A real run end to end in-process: Keras training on real digits into a temp MLflow store."""

from __future__ import annotations

import keras
import mlflow
import numpy as np
import pytest

from mnist_exp.data.splits import load_splits
from mnist_exp.pipeline.one_run import JobInfo, run_experiment
from mnist_exp.pipeline.sweep import PARAM_COUNT_KEYS, STEPS_RUN_KEY
from mnist_exp.tracking import recorder as tracking
from mnist_exp.tracking.recorder import flatten
from mnist_exp.training.fit import fit
from mnist_exp.training.model import build_model, compile_model

EPOCH_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")


@pytest.fixture
def finished_run(make_config, store, mnist_npz):
    """One real 2-epoch run of the reference model; returns (client, run, config, splits)."""
    overrides = [f"data.path={mnist_npz}", "train.epochs=2", *store.overrides]
    cfg = make_config(*overrides)
    splits = load_splits(cfg.data, cfg.train.validation_split, cfg.seed)
    objective = run_experiment(cfg, splits, JobInfo(overrides=overrides))
    (run,) = store.runs()
    return store.client(), run, cfg, splits, objective


def test_run_records_params_metrics_tags_and_artifacts(finished_run):
    client, run, cfg, _, objective = finished_run
    assert run.info.status == "FINISHED"

    params = run.data.params
    assert set(params) == set(flatten(cfg)) | {*PARAM_COUNT_KEYS, STEPS_RUN_KEY}
    assert params["model.total_params"] == "252170"
    assert params["model.hidden_units"] == "[256, 128, 128]"
    assert params["optimizer.name"] == "adam"

    for name in EPOCH_METRICS:
        history = client.get_metric_history(run.info.run_id, name)
        assert [point.step for point in history] == [1, 2], name
    assert 0.0 <= run.data.metrics["test_accuracy"] <= 1.0
    assert run.data.metrics["test_loss"] > 0
    assert objective == pytest.approx(run.data.metrics["val_accuracy"])

    tags = run.data.tags
    assert tags["dataset"] == "mnist" and tags["dataset.variant"] == "full"
    assert (tags["dataset.train_samples"], tags["dataset.val_samples"]) == ("540", "60")
    assert tags["dataset.test_samples"] == "200"
    commit = tracking.git_commit()
    assert tags.get("git_commit") == commit

    artifacts = {item.path for item in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "overrides.yaml", "model_summary.txt"} <= artifacts
    config_text = mlflow.artifacts.load_text(f"{run.info.artifact_uri}/config.yaml")
    assert "hidden_units:" in config_text and "learning_rate: 0.001" in config_text
    summary = mlflow.artifacts.load_text(f"{run.info.artifact_uri}/model_summary.txt")
    assert "252,170" in summary


def test_logged_model_predicts_probabilities_through_pyfunc(finished_run):
    _, run, _, splits, _ = finished_run
    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    probabilities = np.asarray(model.predict(splits.x_test[:16]))
    assert probabilities.shape == (16, 10)
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)
    # The reloaded model is the trained one: it scores like the run's test accuracy.
    all_predictions = np.asarray(model.predict(splits.x_test)).argmax(axis=1)
    accuracy = float(np.mean(all_predictions == splits.y_test))
    assert accuracy == pytest.approx(run.data.metrics["test_accuracy"], abs=1e-6)


@pytest.mark.parametrize(
    ("error", "status"), [(RuntimeError("boom"), "FAILED"), (KeyboardInterrupt(), "KILLED")]
)
def test_a_run_that_raises_never_stays_running(make_config, store, error, status):
    cfg = make_config(*store.overrides)
    experiment_id = tracking.open_experiment(cfg.tracking)
    with pytest.raises(type(error)), tracking.tracked_run(experiment_id, None, {}) as run:
        raise error
    recorded = store.client().get_run(run.info.run_id)
    assert recorded.info.status == status
    if status == "FAILED":
        assert recorded.data.tags["error"] == "RuntimeError: boom"


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
    assert result.val_accuracy == result.history["val_accuracy"][best]
    # The restored weights are the best epoch's: evaluating them gives its val loss.
    restored_loss, _ = model.evaluate(splits.x_val, splits.y_val, verbose=0)
    assert restored_loss == pytest.approx(min(val_losses), rel=1e-4)
