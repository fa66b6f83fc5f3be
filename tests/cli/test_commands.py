"""The real CLI in subprocesses: a run, a multirun, Ctrl-C, and an installed wheel."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    answers,
    free_port,
    interrupt_during_training,
    run_cli,
    stop_process_group,
    wait_until,
)

REPO = Path(__file__).resolve().parents[2]


# What TensorFlow, matplotlib and MLflow would print that says nothing to the user.
NOISE = (
    "absl::InitializeLog",
    "oneDNN custom operations",
    "tf.function retracing",
    "fontManager",
    "Successfully registered model",
    "\x1b[",  # an ANSI colour
)


@pytest.mark.slow
def test_single_run_trains_logs_and_prints_the_summary(tmp_path, store, mnist_npz):
    done = run_cli(
        [
            f"data.path={mnist_npz}",
            "train.epochs=1",
            "tracking.register_as=single",
            f"hydra.run.dir={tmp_path / 'run'}",
            *store.overrides,
        ],
        cwd=tmp_path,
        env={"MPLCONFIGDIR": str(tmp_path / "matplotlib")},  # a font cache built from scratch
    )
    assert done.returncode == 0, done.stderr
    # The terminal is quiet: TensorFlow's import lines are filtered out at the source.
    assert [phrase for phrase in NOISE if phrase in done.stderr] == [], done.stderr
    (run,) = store.runs()
    assert re.fullmatch(r"[a-z]+-[a-z]+-\d+", run.info.run_name)  # MLflow-style, not seeded
    # Params as typed in YAML: null, true, a JSON list.
    assert run.data.params["data.train_size"] == "null"
    assert run.data.params["model.batch_norm"] == "true"
    assert run.data.params["data.class_names"] == json.dumps([str(d) for d in range(10)])
    # float32 metrics as the float32 they are: 0.845, not 0.8450000286102295.
    value = run.data.metrics["final/val_accuracy"]
    assert value == float(str(np.float32(value)))
    assert "registered     models:/single/1" in done.stdout
    assert "(test loss " in done.stdout and ", 1 epoch)" in done.stdout
    assert (
        f"data           mnist: 540 train / 60 val / 200 test images from {mnist_npz}"
        in done.stdout
    )
    link = (
        "then http://127.0.0.1:5000/#/experiments/1/runs/"
        f"{run.info.run_id}?workflowType=machine_learning"
    )
    assert link in done.stdout
    assert run.info.status == "FINISHED"
    assert "17/17 - " in done.stdout and "val_accuracy: " in done.stdout  # Keras progress
    # train.backend=auto chose JAX for the MLP on a CPU, whose device-resident epochs run
    # each epoch as one compiled call (steps_per_execution=auto becomes 1 there).
    assert run.data.params["train.backend"] == "jax"
    assert run.data.params["train.backend.configured"] == "auto"
    assert run.data.params["train.steps_per_execution"] == "1"
    assert run.data.params["train.steps_per_execution.configured"] == "auto"
    assert run.data.tags["device.kind"] == "cpu"
    assert f"test accuracy  {run.data.metrics['final/test_accuracy']:.4f}" in done.stdout
    assert f"mlflow run     {run.info.run_id}" in done.stdout
    assert f"mlflow ui --backend-store-uri {store.uri} --host 127.0.0.1" in done.stdout
    overrides = store.client().download_artifacts(run.info.run_id, "overrides.yaml", str(tmp_path))
    assert "train.epochs=1" in Path(overrides).read_text()
    assert (tmp_path / "run" / ".hydra" / "config.yaml").exists()


@pytest.mark.slow
def test_ctrl_c_during_training_ends_the_run_killed(tmp_path, store, mnist_npz):
    code, stderr = interrupt_during_training(
        [f"data.path={mnist_npz}", f"hydra.run.dir={tmp_path / 'run'}", *store.overrides],
        cwd=tmp_path,
    )
    assert code == 130, stderr
    assert "Traceback" not in stderr
    (run,) = store.runs()
    assert run.info.status == "KILLED"
    # It names the run and the command that continues it (test_reliability runs it).
    assert (
        f"interrupted: run {run.info.run_id} was marked KILLED after epoch "
        in stderr.splitlines()[-1]
    )
    assert stderr.splitlines()[-1].endswith(
        f"of 1000; continue it with: python -m mnist_exp.run resume={run.info.run_id} "
        f"tracking.uri={store.uri}"
    )
    assert store.client().get_metric_history(run.info.run_id, "epoch/loss")[0].step == 1


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory) -> Path:
    """The package built as a wheel and installed (no deps) into a folder of its own."""
    wheel_dir = tmp_path_factory.mktemp("wheel")
    target = tmp_path_factory.mktemp("site")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheel_dir), str(REPO)],
        check=True,
        capture_output=True,
    )
    (wheel,) = wheel_dir.glob("*.whl")
    subprocess.run(
        [*pip, "install", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
    )
    return target


@pytest.mark.slow
def test_installed_wheel_finds_its_configs_from_any_directory(
    tmp_path, installed_wheel, store, mnist_npz
):
    env = {"PYTHONPATH": str(installed_wheel)}
    where = subprocess.run(
        [sys.executable, "-c", "import mnist_exp.conf as c; print(c.__file__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        check=True,
    )
    assert where.stdout.startswith(str(installed_wheel)), "the test must exercise the wheel"
    done = run_cli(
        [
            "model=mlp",
            "optimizer=sgd",
            f"data.path={mnist_npz}",
            "train.epochs=1",
            f"hydra.run.dir={tmp_path / 'run'}",
            *store.overrides,
        ],
        cwd=tmp_path,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    (run,) = store.runs()
    assert (run.info.status, run.data.params["optimizer.name"]) == ("FINISHED", "sgd")


@pytest.mark.slow
def test_installed_wheel_ships_the_optuna_sweeper_plugin(tmp_path, installed_wheel):
    plugin = installed_wheel / "hydra_plugins" / "mnist_exp_optuna" / "optuna_sweeper.py"
    assert plugin.exists()
    done = run_cli(
        ["--cfg", "hydra", "hydra/sweeper=optuna"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(installed_wheel)},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "_target_: hydra_plugins.mnist_exp_optuna.optuna_sweeper.OptunaSweeper" in done.stdout


@pytest.mark.slow
def test_the_ui_command_prints_the_training_view_link_and_serves_the_store(tmp_path, store):
    experiment = store.client().create_experiment("mnist")
    port = free_port()
    command = ["ui", "--tracking-uri", store.uri, "--port", str(port)]
    process = subprocess.Popen(
        [sys.executable, "-m", "mnist_exp.runs", *command],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        first = process.stdout.readline()
        assert first.startswith(
            f"MLflow UI: http://127.0.0.1:{port}/#/experiments/{experiment}/runs"
            "?workflowType=machine_learning"
        ), first
        wait_until(
            lambda: answers(f"http://127.0.0.1:{port}/"), process, process.stdout.read, "mlflow ui"
        )
    finally:
        stop_process_group(process)
