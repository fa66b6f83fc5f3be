"""JAX's device-resident epochs: the data on the device, an epoch per compiled call, and
the same math, checkpoints, early stopping and divergence checks as step by step. Real
CLI runs on JAX (a process of their own: this one runs Keras on TensorFlow)."""

from __future__ import annotations

import signal

import pytest
from conftest import EPOCH, EPOCH_METRICS, finish, histories, pause_at, run_cli, run_id_of, start

JAX = ["train.backend=jax", "train.deterministic=true", "train.verbose=2"]


def jax_run(tmp_path, store, mnist_npz, *args: str, folder: str = "run"):
    """One JAX run on the tiny data; return (process result, its MLflow run or None)."""
    done = run_cli(
        [
            f"data.path={mnist_npz}",
            *JAX,
            *args,
            f"hydra.run.dir={tmp_path / folder}",
            "tracking.log_model=false",
            *store.overrides,
        ],
        cwd=tmp_path,
    )
    if done.returncode != 0:
        return done, None
    return done, store.client().get_run(run_id_of(done.stdout))


@pytest.mark.slow
def test_device_epochs_give_the_step_by_step_histories_exactly(tmp_path, store, mnist_npz):
    # 540 training images at batch 32: 16 full batches and a short one of 28.
    on_device, device_run = jax_run(tmp_path, store, mnist_npz, "train.epochs=3", folder="a")
    assert on_device.returncode == 0, on_device.stderr[-2000:]
    stepped, step_run = jax_run(
        tmp_path, store, mnist_npz, "train.epochs=3", "train.device_epochs=false", folder="b"
    )
    assert stepped.returncode == 0, stepped.stderr[-2000:]
    assert histories(store, device_run) == histories(store, step_run)
    for metric in ("final/test_accuracy", "final/test_loss", "final/val_accuracy"):
        assert device_run.data.metrics[metric] == step_run.data.metrics[metric], metric
    assert device_run.data.params["train.steps_per_execution"] == "1"  # an epoch a call
    assert step_run.data.params["train.steps_per_execution"] == "17"  # auto: 64, capped
    assert step_run.data.params["train.steps_per_execution.configured"] == "auto"
    assert device_run.data.tags["device.kind"] == "cpu"
    # The progress line still counts every step of the epoch.
    assert "17/17 - " in on_device.stdout


@pytest.mark.slow
def test_a_killed_device_run_resumes_to_the_uninterrupted_result(tmp_path, store, mnist_npz):
    whole, reference = jax_run(tmp_path, store, mnist_npz, "train.epochs=6", folder="whole")
    assert whole.returncode == 0, whole.stderr[-2000:]
    process = start(
        [
            f"data.path={mnist_npz}",
            *JAX,
            "train.epochs=6",
            f"hydra.run.dir={tmp_path / 'cut'}",
            "tracking.log_model=false",
            *store.overrides,
        ],
        tmp_path,
    )
    pause_at(process, "Epoch 3/6")
    process.send_signal(signal.SIGTERM)
    process.send_signal(signal.SIGCONT)
    assert finish(process)[0] == 130
    (cut,) = [run for run in store.runs() if run.data.tags["output_dir"].endswith("cut")]
    assert cut.info.status == "KILLED"
    assert int(cut.data.tags["last_completed_epoch"]) < 6
    done = run_cli([f"resume={cut.info.run_id}", *store.overrides], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    resumed = store.client().get_run(cut.info.run_id)
    assert histories(store, resumed) == histories(store, reference)
    for metric in ("final/test_accuracy", "final/test_loss", "final/val_accuracy"):
        assert resumed.data.metrics[metric] == reference.data.metrics[metric], metric


@pytest.mark.slow
def test_early_stopping_and_divergence_work_on_device_epochs(tmp_path, store, mnist_npz):
    stopped, run = jax_run(
        tmp_path,
        store,
        mnist_npz,
        "train.epochs=8",
        "train.early_stopping=true",
        "train.patience=1",
        "optimizer.learning_rate=0.02",
        folder="early",
    )
    assert stopped.returncode == 0, stopped.stderr[-2000:]
    history = histories(store, run)
    val_losses = [value for _, value in history["val_loss"]]
    assert len(val_losses) < 8
    best = val_losses.index(min(val_losses))
    assert run.data.metrics["final/val_accuracy"] == history["val_accuracy"][best][1]

    diverged, _ = jax_run(
        tmp_path,
        store,
        mnist_npz,
        "train.epochs=3",
        "optimizer=sgd",
        "optimizer.learning_rate=1e30",  # JAX's clipped cross-entropy stays finite at 1e6
        folder="diverged",
    )
    assert diverged.returncode == 1
    assert diverged.stderr.strip().splitlines()[-1] == (
        "error: the run failed (nan_loss): loss became nan in epoch 1"
    )
    (failed,) = [run for run in store.runs() if run.info.status == "FAILED"]
    assert failed.data.tags["last_completed_epoch"] == "1"
    assert {EPOCH + name for name in EPOCH_METRICS} <= set(failed.data.metrics)


@pytest.mark.slow
def test_mixed_precision_trains_and_is_logged(tmp_path, store, mnist_npz):
    done, run = jax_run(
        tmp_path, store, mnist_npz, "train.epochs=2", "train.precision=mixed_bfloat16"
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert run.data.params["train.precision"] == "mixed_bfloat16"
    assert run.data.metrics["final/test_accuracy"] > 0.3  # it learned in bfloat16
    assert 0 < run.data.metrics["final/test_loss"] < 3  # float32 probabilities: a finite loss


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "tensorflow"])
def test_a_gpu_asked_for_and_not_there_is_one_line(tmp_path, store, mnist_npz, backend):
    done = run_cli(
        [
            f"data.path={mnist_npz}",
            f"train.backend={backend}",
            "train.device=gpu",
            *store.overrides,
        ],
        cwd=tmp_path,
        env={"CUDA_VISIBLE_DEVICES": ""},
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert line.startswith("error: train.device=gpu: ")
    assert done.stderr.strip().splitlines()[-1] == line
    assert store.runs() == []


def test_keras_still_has_the_flag_that_keeps_tensorflow_out():
    """keep_tensorflow_out sets Keras's private LazyModule flag (no public switch exists):
    fail loudly, naming Keras, the day a release changes it."""
    import keras
    from keras.src.utils import module_utils

    lazy = getattr(module_utils, "tensorflow", None)
    assert lazy is not None and "_available" in vars(lazy), (
        f"Keras {keras.__version__} changed keras.src.utils.module_utils.tensorflow "
        "(its _available flag): update mnist_exp.training.jax_epochs.keep_tensorflow_out"
    )
