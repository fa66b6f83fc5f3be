"""Reliability: identical reruns, resume after a kill, clean failures, safe defaults."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import Store, free_port, histories, one_line_error, run_cli, run_id_of

REPO = Path(__file__).resolve().parents[2]


def deterministic_args(folder, mnist_npz, store, name: str) -> list[str]:
    return [
        f"data.path={mnist_npz}",
        "train.epochs=4",
        "train.deterministic=true",
        f"hydra.run.dir={folder / name}",
        *store.overrides,
    ]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, mnist_npz):
    """One deterministic 4-epoch run that was never interrupted: (store, folder, run)."""
    folder = tmp_path_factory.mktemp("deterministic")
    store = Store(uri=f"sqlite:///{folder / 'mlflow.db'}", artifacts=folder / "artifacts")
    done = run_cli(deterministic_args(folder, mnist_npz, store, "whole"), cwd=folder)
    assert done.returncode == 0, done.stderr
    return store, folder, store.client().get_run(run_id_of(done.stdout))


@pytest.mark.slow
def test_deterministic_runs_repeat_exactly(reference, mnist_npz):
    store, folder, whole = reference
    done = run_cli(deterministic_args(folder, mnist_npz, store, "again"), cwd=folder)
    assert done.returncode == 0, done.stderr
    again = store.client().get_run(run_id_of(done.stdout))
    assert again.info.run_id != whole.info.run_id
    assert histories(store, again) == histories(store, whole)
    assert again.data.metrics["final/test_accuracy"] == whole.data.metrics["final/test_accuracy"]
    assert again.data.metrics["final/test_loss"] == whole.data.metrics["final/test_loss"]


@pytest.mark.slow
def test_killed_run_resumes_in_the_same_mlflow_run_with_identical_results(reference, mnist_npz):
    store, folder, whole = reference
    # The same run, killed (SIGTERM) once epoch 2 of 4 is done.
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mnist_exp.run",
            *deterministic_args(folder, mnist_npz, store, "cut"),
        ],
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        for line in process.stdout:
            if line.startswith("Epoch 3/4"):
                process.send_signal(signal.SIGTERM)
                killed_at = time.monotonic()
                break
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    assert time.monotonic() - killed_at < 15  # "within a few seconds", generously
    (cut,) = [run for run in store.runs() if run.data.tags.get("output_dir", "").endswith("cut")]
    assert cut.info.status == "KILLED"
    assert cut.data.tags["last_completed_epoch"] == "2"
    assert (folder / "cut" / "checkpoints" / "last.keras").is_file()
    runs_before = len(store.runs())

    # Resume with the command the interrupt printed: the same MLflow run finishes the
    # remaining epochs.
    printed = stderr.splitlines()[-1].split("continue it with: python -m mnist_exp.run ")[1]
    assert printed == f"resume={cut.info.run_id} tracking.uri={store.uri}"
    done = run_cli(shlex.split(printed), cwd=folder)
    assert done.returncode == 0, done.stderr
    assert f"resuming run {cut.info.run_id} from epoch 3 of 4" in done.stdout
    assert len(store.runs()) == runs_before, "resume must reopen the run, not start a new one"
    resumed = store.client().get_run(cut.info.run_id)
    assert resumed.info.status == "FINISHED"
    assert resumed.data.tags["resumed_after_epoch"] == "2"
    # Under train.backend=auto (the default), on the backend it chose and resumed on.
    assert (whole.data.params["train.backend.configured"], whole.data.params["train.backend"]) == (
        "auto",
        "jax",
    )
    assert resumed.data.tags["keras.backend"] == "jax"
    assert resumed.data.params == whole.data.params  # logged once, never re-logged
    assert histories(store, resumed) == histories(store, whole)
    for metric in ("final/test_accuracy", "final/test_loss", "final/val_accuracy"):
        assert resumed.data.metrics[metric] == whole.data.metrics[metric], metric


def test_resume_of_something_unknown_is_a_one_line_error(tmp_path, store):
    done = run_cli(["resume=0123456789abcdef0123456789abcdef", *store.overrides], cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().startswith("error: resume=0123456789abcdef0123456789abcdef: ")
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("empty", ["resume=", "resume=''", "rerun="])
def test_an_empty_resume_or_rerun_is_refused_not_a_new_run(tmp_path, store, empty):
    line = one_line_error(tmp_path, empty, *store.overrides)
    assert line.startswith(f"error: {empty.split('=')[0]}=")
    assert store.runs() == []


@pytest.mark.slow
@pytest.mark.parametrize(
    ("backend", "reason", "message"),
    [
        ("tensorflow", "nan_loss", "loss became nan in epoch 1"),
        # Keras clips the probabilities on JAX: the loss stays finite (~14), at chance.
        ("jax", "diverged", "far above a uniform guess's 2.303, at chance accuracy"),
    ],
)
def test_the_docs_diverging_run_fails_on_both_backends(
    tmp_path, store, mnist_npz, backend, reason, message
):
    done = run_cli(
        [
            f"data.path={mnist_npz}",
            "optimizer=sgd",
            "optimizer.learning_rate=1e6",
            "train.epochs=3",
            f"train.backend={backend}",
            f"hydra.run.dir={tmp_path / 'run'}",
            *store.overrides,
        ],
        cwd=tmp_path,
    )
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: the run failed ({reason}): ") and message in last
    assert "Traceback" not in done.stderr
    (run,) = store.runs()
    assert run.info.status == "FAILED"
    assert run.data.tags["failure_reason"] == reason
    assert run.data.tags["last_completed_epoch"] == "1"  # what was reached is logged


def test_unreachable_tracking_server_fails_fast_before_training(tmp_path, mnist_npz):
    uri = f"http://127.0.0.1:{free_port()}"  # a port nothing listens on
    started = time.monotonic()
    done = run_cli([f"tracking.uri={uri}", f"data.path={mnist_npz}"], cwd=tmp_path, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"error: tracking.uri={uri}: the MLflow server does not answer "
        "([Errno 111] Connection refused)"
    )
    assert time.monotonic() - started < 30  # bounded, unlike MLflow's own retries


def test_every_server_command_in_the_docs_and_makefile_binds_loopback():
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    documented = "\n".join(
        block
        for page in pages
        for block in re.findall(r"```bash\n(.*?)```", page.read_text(), flags=re.S)
    )
    lines = [*documented.splitlines(), *(REPO / "Makefile").read_text().splitlines()]
    servers = r"mlflow (ui|server|models serve)\b|optuna-dashboard "
    commands = [line for line in lines if re.search(servers, line)]
    assert len(commands) >= 3, "the docs show the UI, the server and serving"
    for command in commands:
        assert "--host 127.0.0.1" in command, command
