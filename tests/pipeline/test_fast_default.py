"""The default at full speed: ``train.backend=auto`` picks by model and device and says what
it picked, and a sweep's jobs (which share data, compiled epochs and MLflow in one
process, and finish their records in the background) are timed each from its own start
and train exactly as they would alone."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import histories, in_process, run_cli, run_id_of, train_in_process

from mnist_exp.cli.run import main as run_main
from mnist_exp.tracking.recorder import RunRecorder
from mnist_exp.tracking.sqlite_runs import latest_run_tagged
from mnist_exp.training import devices
from mnist_exp.training.devices import resolve_backend


@pytest.fixture
def no_keras_loaded(monkeypatch):
    """A process that has not imported Keras yet (this test process has)."""
    monkeypatch.delitem(sys.modules, "keras", raising=False)


@pytest.mark.parametrize(
    ("device", "gpu", "model_type", "augment", "expected"),
    [
        ("auto", False, "mlp", False, "jax"),  # measured fastest on a CPU
        ("auto", False, "mlp", True, "tensorflow"),  # JAX compiles augmentation slowly
        ("auto", False, "cnn", False, "tensorflow"),  # measured fastest on a CPU
        ("cpu", True, "cnn", False, "tensorflow"),  # the GPU is not to be used
        ("auto", True, "cnn", True, "jax"),  # only JAX trains on a GPU here
        ("gpu", False, "mlp", False, "jax"),  # asked for a GPU: JAX (which says if it has none)
    ],
)
def test_auto_picks_the_measured_fastest_backend_for_model_and_device(
    no_keras_loaded, monkeypatch, device, gpu, model_type, augment, expected
):
    monkeypatch.setattr(devices, "gpu_visible", lambda: gpu)
    assert resolve_backend("auto", device, model_type, augment) == expected


def test_auto_keeps_the_loaded_backend_falls_back_without_jax_and_a_named_one_wins(
    monkeypatch,
):
    import keras

    # A sequential sweep's later job: Keras cannot switch inside a process.
    assert resolve_backend("auto", "auto", "mlp") == keras.backend.backend()
    assert resolve_backend("jax", "cpu", "cnn") == "jax"
    assert resolve_backend("tensorflow", "auto", "mlp") == "tensorflow"
    monkeypatch.delitem(sys.modules, "keras", raising=False)
    monkeypatch.setattr(devices.importlib.util, "find_spec", lambda name: None)
    assert resolve_backend("auto", "auto", "mlp") == "tensorflow"


@pytest.mark.slow
def test_a_default_sweep_runs_on_jax_times_each_job_alone_and_trains_as_alone(
    tmp_path, store, mnist_npz
):
    common = [
        "train.epochs=2",
        "train.verbose=0",
        "train.deterministic=true",
        f"data.path={mnist_npz}",
        *store.overrides,
    ]
    swept = run_cli(["-m", "seed=1,2", f"hydra.sweep.dir={tmp_path / 'sweep'}", *common], tmp_path)
    assert swept.returncode == 0, swept.stderr
    alone = run_cli(["seed=2", *common], tmp_path)
    assert alone.returncode == 0, alone.stderr

    runs = {run.info.run_id: run for run in store.runs()}
    single = runs[run_id_of(alone.stdout)]
    jobs = sorted(
        (run for run in runs.values() if run.data.tags.get("sweep.job_num")),
        key=lambda run: run.info.start_time,
    )
    assert [job.data.params["seed"] for job in jobs] == ["1", "2"]
    for run in [*jobs, single]:
        # auto, logged as configured and as it ran.
        assert run.data.params["train.backend"] == "jax"
        assert run.data.params["train.backend.configured"] == "auto"
        assert run.data.tags["keras.backend"] == "jax"
        # Each job's record is whole before the sweep ends (report, model, timings).
        assert run.info.status == "FINISHED"
        assert "final/test_accuracy" in run.data.metrics
        artifacts = {item.path for item in store.client().list_artifacts(run.info.run_id)}
        assert {"report", "config.yaml"} <= artifacts
        assert run.data.metrics["time/overhead_seconds"] > 0
    # A run starts when its job did, not when its record opened (as training began): a
    # single run at the process's launch, a sweep's job when it was handed over, after
    # its sweep's parent (whose children are counted from its start).
    single_seconds = (single.info.end_time - single.info.start_time) / 1000
    metrics = single.data.metrics
    assert single_seconds >= metrics["time/startup_seconds"] + metrics["time/fit_seconds"]
    (parent,) = [run for run in runs.values() if run.data.tags.get("sweep.role") == "parent"]
    assert all(job.info.start_time >= parent.info.start_time for job in jobs)
    assert "2 finished, 0 failed" in swept.stdout
    first, second = jobs
    # The second job's start-up is its own: from its start, not from the sweep's.
    first_seconds = (first.info.end_time - first.info.start_time) / 1000
    assert second.data.metrics["time/startup_seconds"] < first_seconds
    assert second.data.metrics["time/startup_seconds"] < first.data.metrics["time/startup_seconds"]
    second_seconds = (second.info.end_time - second.info.start_time) / 1000
    assert second.data.metrics["time/overhead_seconds"] < second_seconds
    # The second job reused the first's data and compiled epoch, and trained exactly as
    # the same seed does alone in a fresh process.
    assert histories(store, second) == histories(store, single)
    assert second.data.metrics["final/test_accuracy"] == single.data.metrics["final/test_accuracy"]


def test_a_sequential_grid_creates_its_parent_run_only_as_its_first_job_trains(
    tmp_path, store, mnist_npz, monkeypatch
):
    """Nothing of MLflow's (its import, the store's opening: about 2.5 s) runs before a
    sequential sweep's first job trains: its parent run is created beside that job's first
    epoch, yet starts with the sweep, before its children, none of them counted skipped."""
    common = [f"data.path={mnist_npz}", "train.epochs=1", "train.verbose=0", *store.overrides]
    train_in_process(*common)  # a store that exists already: a parent could be found in it
    database = Path(store.uri.removeprefix("sqlite:///"))
    parent_when_training_started = []
    training_started = RunRecorder.training_started

    def noting_the_parent(recorder: RunRecorder) -> None:
        parent = latest_run_tagged(database, "mnist", {"sweep.role": "parent"})
        parent_when_training_started.append(parent)
        training_started(recorder)

    monkeypatch.setattr(RunRecorder, "training_started", noting_the_parent)
    sweep = ["-m", "seed=1,2", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    done = in_process(run_main, [*sweep, *common])
    assert done.returncode == 0, done.stderr
    assert "2 finished, 0 failed" in done.stdout
    (parent,) = [run for run in store.runs() if run.data.tags.get("sweep.role") == "parent"]
    assert parent_when_training_started == [None, parent.info.run_id]
    assert f"sweep: MLflow parent run {parent.info.run_id}" in done.stderr
    children = store.sweep_children()
    assert len(children) == 2
    assert all(child.info.start_time >= parent.info.start_time for child in children)
    assert parent.data.tags["sweep.skipped_jobs"] == "0"
    assert parent.data.tags["best_run_id"] in {child.info.run_id for child in children}
