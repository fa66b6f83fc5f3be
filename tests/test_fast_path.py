"""Every fast-path switch trains, logs and yields a usable model (speed lives in bench/)."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest
from conftest import run_cli


@pytest.mark.parametrize(
    ("switches", "backend"),
    [
        (["train.backend=jax", "train.steps_per_execution=64"], "jax"),
        (
            ["train.steps_per_execution=8", "train.intra_op_threads=1", "train.inter_op_threads=1"],
            "tensorflow",
        ),
    ],
    ids=["jax-steps64", "tensorflow-steps8-threads1"],
)
def test_fast_path_switch_trains_and_logs(tmp_path, store, mnist_npz, switches, backend):
    done = run_cli(
        [
            f"data.path={mnist_npz}",
            "train.epochs=2",
            f"hydra.run.dir={tmp_path / 'run'}",
            *switches,
            *store.overrides,
        ],
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    (run,) = store.runs()
    assert run.info.status == "FINISHED"
    assert run.data.tags["keras.backend"] == backend
    history = store.client().get_metric_history(run.info.run_id, "val_loss")
    assert [point.step for point in history] == [1, 2]
    assert {"fit_seconds", "startup_seconds", "mlflow_seconds_per_epoch"} <= set(run.data.metrics)
    assert run.data.metrics["test_accuracy"] > 0.3  # it learned something in 2 epochs
    if backend == "tensorflow":
        assert (run.data.tags["threads.intra_op"], run.data.tags["threads.inter_op"]) == ("1", "1")
    # The logged model works here, whatever backend trained it.
    mlflow.set_tracking_uri(store.uri)
    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    probabilities = np.asarray(model.predict(np.zeros((3, 784), np.float32)))
    assert probabilities.shape == (3, 10)


def test_jax_backend_without_jax_or_in_a_tensorflow_process_is_a_clear_error():
    import keras

    from mnist_exp.config import ConfigError
    from mnist_exp.run import select_backend

    assert keras.backend.backend() == "tensorflow"
    with pytest.raises(ConfigError, match=r"^train\.backend=jax: this process already runs"):
        select_backend("jax")
