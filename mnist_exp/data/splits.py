"""Check a dataset's arrays, split them into train/validation/test and fingerprint each.

The arrays come from :mod:`mnist_exp.data.sources`. Every split is checked before any
training or MLflow run: 28x28 uint8 images, one integer label per image, labels within
the configured classes. The validation set is carved out of the training set with a
seeded permutation; ``data.train_size`` then keeps a seeded, stratified share of what
is left. Each split gets a SHA-256 digest of its exact pixels and labels (the lineage
MLflow records). Only NumPy is needed here: TensorFlow is not imported.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mnist_exp.config.schema import ConfigError, DataConfig
from mnist_exp.data.sources import RawData, drawn_with_seed, load_raw, stratified_indices

IMAGE_SIDE = 28
IMAGE_PIXELS = IMAGE_SIDE * IMAGE_SIDE
SPLITS = ("train", "val", "test")


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
    variant: str  # "full", "subset" or "offline_subset"
    source: str
    class_names: tuple[str, ...]
    digests: dict[str, str] = field(default_factory=dict)  # split -> content digest

    def sizes(self) -> dict[str, int]:
        """Number of samples in each split."""
        return {"train": len(self.y_train), "val": len(self.y_val), "test": len(self.y_test)}

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """The images and labels of split ``name`` (train, val or test)."""
        return getattr(self, f"x_{name}"), getattr(self, f"y_{name}")

    def tags(self) -> dict[str, str]:
        """What a run records about its data: name, variant, source and split sizes."""
        return {
            "dataset": self.name,
            "dataset.variant": self.variant,
            "dataset.source": self.source,
            **{f"dataset.{split}_samples": str(n) for split, n in self.sizes().items()},
        }


def load_splits(data_cfg: DataConfig, validation_split: float, seed: int) -> Splits:
    """Load the configured data, check it, and split it (see the module docstring)."""
    return split_data(load_data(data_cfg, seed), data_cfg, validation_split, seed)


@dataclass(frozen=True)
class LoadedData:
    """Checked raw data, its test set scaled once (it is the same for every seed)."""

    raw: RawData
    x_test: np.ndarray
    y_test: np.ndarray


def load_data(data_cfg: DataConfig, seed: int) -> LoadedData:
    """Read the configured data and check it: every error in the data is raised here.

    A process keeps the last data it read from ``data.path``: the jobs of a sequential
    sweep read the file once, unless it changed in between, and only split it per seed."""
    key = _data_key(data_cfg, seed)
    if key is None or not _last_loaded or _last_loaded[0] != key:
        raw = load_raw(data_cfg, seed)
        check_arrays(raw, len(data_cfg.class_names))
        x_test, y_test = raw.arrays["x_test"], raw.arrays["y_test"]
        _last_loaded[:] = [key, LoadedData(raw, _scale(x_test), y_test.astype(np.int64))]
    return _last_loaded[1]


def split_data(
    loaded: LoadedData, data_cfg: DataConfig, validation_split: float, seed: int
) -> Splits:
    """Split loaded data into scaled training, validation and test sets, by ``seed``."""
    raw = loaded.raw
    images, labels = raw.arrays["x_train"], raw.arrays["y_train"]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))
    n_val = max(1, round(len(order) * validation_split))
    val_idx, train_idx = order[:n_val], order[n_val:]
    if data_cfg.train_size is not None:
        if data_cfg.train_size > len(train_idx):
            raise ConfigError(
                f"data.train_size={data_cfg.train_size}: {raw.origin} has only "
                f"{len(train_idx)} training examples after the validation split"
            )
        train_idx = train_idx[stratified_indices(labels[train_idx], data_cfg.train_size, rng)]
    parts = {
        "train": (images[train_idx], labels[train_idx]),
        "val": (images[val_idx], labels[val_idx]),
    }
    scaled = {}
    for split, (split_images, split_labels) in parts.items():
        scaled[f"x_{split}"] = _scale(split_images)
        scaled[f"y_{split}"] = split_labels.astype(np.int64)
    test = (raw.arrays["x_test"], raw.arrays["y_test"])
    return Splits(
        **scaled,
        x_test=loaded.x_test,
        y_test=loaded.y_test,
        name=data_cfg.name,
        variant=raw.variant,
        source=raw.source,
        class_names=tuple(data_cfg.class_names),
        digests={split: content_digest(*part) for split, part in {**parts, "test": test}.items()},
    )


# [key, LoadedData] of the last data this process loaded.
_last_loaded: list = []


def _data_key(data_cfg: DataConfig, seed: int) -> str | None:
    """What data read from ``data.path`` depends on: the data config, the seed if the data
    is drawn with it, and the size and modification time of its files. None without a
    path (where the data comes from then depends on the machine: not kept)."""
    if not data_cfg.path:
        return None
    path = Path(data_cfg.path)
    files = sorted(path.iterdir()) if path.is_dir() else [path]
    stamps = [(str(f), (stat := f.stat()).st_size, stat.st_mtime_ns) for f in files if f.is_file()]
    return json.dumps([repr(data_cfg), seed if drawn_with_seed(data_cfg) else None, stamps])


def check_arrays(raw: RawData, num_classes: int) -> None:
    """Reject arrays a model cannot be trained on, naming the file and the problem."""
    for split in ("train", "test"):
        images, labels = raw.arrays[f"x_{split}"], raw.arrays[f"y_{split}"]
        where = raw.origin
        if images.ndim not in (2, 3) or images[0].size != IMAGE_PIXELS:
            raise ConfigError(f"{where}: x_{split} has shape {images.shape}; expected (N, 28, 28)")
        if images.dtype != np.uint8:
            raise ConfigError(
                f"{where}: x_{split} has dtype {images.dtype}; expected uint8 pixels 0-255"
            )
        if labels.ndim != 1 or len(labels) != len(images):
            raise ConfigError(
                f"{where}: y_{split} has shape {labels.shape}; expected ({len(images)},) "
                f"to match x_{split}"
            )
        if not np.issubdtype(labels.dtype, np.integer):
            raise ConfigError(
                f"{where}: y_{split} has dtype {labels.dtype}; expected integer labels"
            )
        if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
            raise ConfigError(
                f"{where}: y_{split} holds labels {labels.min()}..{labels.max()}; "
                f"expected 0..{num_classes - 1} (data.class_names has {num_classes} classes)"
            )


def content_digest(images: np.ndarray, labels: np.ndarray) -> str:
    """A SHA-256 (first 16 hex digits) of the exact pixels, labels and their order."""
    digest = hashlib.sha256()
    for array in (images.astype(np.uint8, copy=False), labels.astype(np.int64, copy=False)):
        digest.update(str(array.shape).encode())
        digest.update(np.ascontiguousarray(array).data)
    return digest.hexdigest()[:16]


def _scale(images: np.ndarray) -> np.ndarray:
    """Flat float32 pixels in [0, 1] (divided in float32: no float64 copy of the set)."""
    flat = images.reshape(len(images), IMAGE_PIXELS)
    return np.divide(flat, np.float32(255), dtype=np.float32)
