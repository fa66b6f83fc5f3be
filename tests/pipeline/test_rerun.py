"""rerun=<run id>: a new run from an old run's record, exactly reproduced when deterministic,
forked by overrides laid over it, and refused in one line when it cannot be."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import histories, one_line_error, run_cli, run_id_of, train_in_process
from hydra import compose, initialize_config_module

from mnist_exp.config.schema import validate
from mnist_exp.data.splits import load_splits
from mnist_exp.pipeline.one_run import JobInfo, run_one
from mnist_exp.pipeline.rerun import load_rerun, metrics_comparison, provenance_changes
from mnist_exp.tracking.run_details import RunDetails

TINY = ["train.epochs=1", "train.verbose=0", "train.checkpoint=false"]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory, mnist_npz):
    """A store holding one real run (seed 7, dropout 0.25) and a 2-job sweep."""
    from conftest import Store

    folder = tmp_path_factory.mktemp("rerun")
    store = Store(uri=f"sqlite:///{folder / 'mlflow.db'}", artifacts=folder / "mlartifacts")
    train_in_process(
        f"data.path={mnist_npz}", "seed=7", "model.dropout=0.25", *TINY, *store.overrides
    )
    (run,) = store.runs()
    return store, run


def compose_rerun(*overrides: str):
    with initialize_config_module("mnist_exp.conf", version_base="1.3"):
        return validate(compose("config", overrides=list(overrides))), list(overrides)


def test_a_fork_lays_its_overrides_over_the_record(recorded, tmp_path):
    store, run = recorded
    run_id = run.info.run_id
    cfg, overrides = compose_rerun(
        f"rerun={run_id[:8]}",
        "optimizer=sgd",
        "model.dropout=0.3",
        "tracking.note=fork",
        *store.overrides,
    )
    forked, record = load_rerun(cfg.rerun, cfg, overrides)
    assert record.run_id == run_id and forked.rerun == run_id
    assert forked.seed == 7  # from the record, not the default 42
    assert forked.model.dropout == 0.3
    assert forked.optimizer.name == "sgd" and forked.optimizer.momentum == 0.9
    assert "beta_1" not in forked.optimizer  # the whole section was replaced
    assert forked.tracking.note == "fork" and forked.tracking.uri == store.uri

    splits = load_splits(forked.data, forked.train.validation_split, forked.seed)
    run_one(forked, splits, JobInfo(overrides=overrides, rerun_of=record))
    new = store.runs()[-1]
    assert new.data.tags["rerun_of"] == run_id
    assert new.data.params["optimizer.name"] == "sgd" and new.data.params["seed"] == "7"
    assert new.data.tags["mlflow.note.content"] == "fork"


def test_the_comparison_says_same_or_by_how_much():
    same = {"final/val_accuracy": 0.9, "final/test_accuracy": 0.95, "final/test_loss": 0.2}
    assert metrics_comparison(same, dict(same)) == "the same final metrics as the original"
    moved = {**same, "final/test_accuracy": 0.9512}
    assert metrics_comparison(same, moved) == (
        "differs from the original: final/test_accuracy 0.9500 -> 0.9512 (+0.0012)"
    )


def test_provenance_changes_are_one_line_each():
    record = RunDetails(
        run_id="a" * 32,
        name="old",
        status="FINISHED",
        experiment_id="1",
        start_time=0,
        end_time=1,
        artifact_uri="",
        params={},
        metrics={},
        tags={"mlflow.source.git.commit": "abc", "keras.backend": "tensorflow"},
        config_yaml="",
        versions={"keras": "3.10.0", "mlflow": "3.17.2"},
    )
    now = {"commit": "abc (dirty)", "keras": "3.15.1", "mlflow": "3.17.2", "keras.backend": "jax"}
    assert provenance_changes(record, now) == [
        "commit: abc -> abc (dirty)",
        "keras: 3.10.0 -> 3.15.1",
        "keras.backend: tensorflow -> jax",
    ]


def test_a_rerun_of_an_unknown_id_a_sweep_parent_or_another_store_is_one_line(
    recorded, tmp_path, mnist_npz
):
    store, run = recorded
    unknown = one_line_error(tmp_path, "rerun=0123456789abcdef0123456789abcdef", *store.overrides)
    assert "no run 0123456789abcdef0123456789abcdef in" in unknown
    other = tmp_path / "other.db"
    store.client()  # the recorded store exists; the other one does not
    elsewhere = one_line_error(
        tmp_path, f"rerun={run.info.run_id}", f"tracking.uri=sqlite:///{other}"
    )
    assert "no MLflow store at" in elsewhere
    parent = store.client().create_run(
        store.client().get_experiment_by_name("mnist").experiment_id,
        tags={"sweep.role": "parent"},
    )
    store.client().set_terminated(parent.info.run_id)
    refused = one_line_error(tmp_path, f"rerun={parent.info.run_id}", *store.overrides)
    assert "is a sweep's parent run, not a training run" in refused
    in_sweep = one_line_error(tmp_path, "-m", f"rerun={run.info.run_id}", *store.overrides)
    assert "rerun: one run at a time" in in_sweep


def test_a_record_that_no_longer_validates_names_the_key(recorded, tmp_path):
    store, run = recorded
    client = store.client()
    config = Path(client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path)))
    old = yaml.safe_load(config.read_text())
    old["model"]["droput"] = old["model"].pop("dropout")  # a key renamed since
    copy = client.create_run(run.info.experiment_id)
    client.log_text(copy.info.run_id, yaml.safe_dump(old), "config.yaml")
    client.set_terminated(copy.info.run_id)
    line = one_line_error(tmp_path, f"rerun={copy.info.run_id}", *store.overrides)
    assert "the recorded config no longer fits today's schema: model.droput: unknown key" in line


@pytest.mark.slow
def test_a_deterministic_rerun_reproduces_every_epoch_exactly(tmp_path, store, mnist_npz):
    common = [f"data.path={mnist_npz}", "train.verbose=0", *store.overrides]
    first = run_cli(
        ["train.deterministic=true", "train.epochs=2", "model.dropout=0.3", *common], tmp_path
    )
    assert first.returncode == 0, first.stderr
    original = run_id_of(first.stdout)
    again = run_cli([f"rerun={original}", *common], tmp_path)
    assert again.returncode == 0, again.stderr
    assert f"rerun of {original[:8]}" in again.stdout
    assert "rerun          the same final metrics as the original" in again.stdout
    old_run, new_run = store.runs()
    assert new_run.data.tags["rerun_of"] == original
    assert histories(store, new_run) == histories(store, old_run)
    assert len(histories(store, new_run)["val_accuracy"]) == 2
    assert new_run.data.params["model.dropout"] == "0.3"
    assert (
        new_run.data.metrics["final/test_accuracy"] == old_run.data.metrics["final/test_accuracy"]
    )
