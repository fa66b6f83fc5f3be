"""Every fast-path switch trains, logs and yields a usable model (speed lives in bench/)."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest
from conftest import run_cli
from omegaconf import OmegaConf


@pytest.mark.slow
@pytest.mark.parametrize(
    ("switches", "backend"),
    [
        (["train.backend=jax", "train.device_epochs=false"], "jax"),
        (
            ["train.backend=tensorflow", "train.intra_op_threads=1", "train.inter_op_threads=1"],
            "tensorflow",
        ),
    ],
    ids=["jax", "tensorflow-threads1"],
)
def test_fast_path_switch_trains_logs_and_keeps_the_math(
    tmp_path, store, mnist_npz, switches, backend
):
    # 540 training images at batch 32 = 17 steps per epoch, the last one short: 7 steps
    # per execution leaves a partial group at the end of every epoch.
    done = run_cli(
        [
            "-m",
            f"data.path={mnist_npz}",
            "train.epochs=2",
            "train.deterministic=true",
            "train.steps_per_execution=1,7",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
            *switches,
            *store.overrides,
        ],
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    runs = {run.data.params["train.steps_per_execution"]: run for run in store.sweep_children()}
    assert set(runs) == {"1", "7"}
    histories = {}
    for steps, run in runs.items():
        assert run.info.status == "FINISHED"
        assert run.data.tags["keras.backend"] == backend
        history = store.client().get_metric_history(run.info.run_id, "epoch/loss")
        assert [point.step for point in history] == [1, 2]
        histories[steps] = [point.value for point in history]
        metrics = run.data.metrics
        assert {"time/fit_seconds", "time/startup_seconds", "time/mlflow_seconds_per_epoch"} <= set(
            metrics
        )
        assert metrics["final/test_accuracy"] > 0.3  # it learned something in 2 epochs
        if backend == "tensorflow":
            threads = (run.data.tags["threads.intra_op"], run.data.tags["threads.inter_op"])
            assert threads == ("1", "1")
    # Grouping steps changes how they are dispatched, not which batches they see.
    assert histories["7"] == pytest.approx(histories["1"], rel=1e-5)
    # The logged model works here, whatever backend trained it.
    mlflow.set_tracking_uri(store.uri)
    model = mlflow.pyfunc.load_model(f"runs:/{runs['7'].info.run_id}/model")
    probabilities = np.asarray(model.predict(np.zeros((3, 784), np.float32)))
    assert probabilities.shape == (3, 10)


def test_jax_backend_without_jax_or_in_a_tensorflow_process_is_a_clear_error():
    import keras

    from mnist_exp.config.schema import ConfigError
    from mnist_exp.training.devices import select_backend

    assert keras.backend.backend() == "tensorflow"
    with pytest.raises(ConfigError, match=r"^train\.backend=jax: this process already runs"):
        select_backend(OmegaConf.create({"backend": "jax", "device": "auto"}), "mlp")
