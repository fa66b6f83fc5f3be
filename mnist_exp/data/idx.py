"""Read the classic IDX files of MNIST-style datasets (plain or ``.gz``), checking them.

An IDX file is a big-endian header (two zero bytes, a type code, the number of
dimensions, then each dimension as a 32-bit integer) followed by the raw values. MNIST
and Fashion-MNIST use unsigned bytes (type 0x08): images of 3 dimensions (count, 28,
28) and labels of 1 (count). Everything is checked before the data is used: magic
number, type, dimensions and that the file holds exactly the values its header
announces (a truncated download is caught here, not in training).
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from mnist_exp.config.schema import ConfigError

UNSIGNED_BYTE = 0x08
# Role -> the two naming styles in use (the original site's and the Debian/LeCun one).
IDX_FILES = {
    "x_train": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "y_train": ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    "x_test": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    "y_test": ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}


def is_idx_folder(folder: Path) -> bool:
    """Whether ``folder`` holds at least one of the four IDX files."""
    return folder.is_dir() and any(_candidates(folder, role) for role in IDX_FILES)


def read_idx_folder(folder: Path, key_name: str) -> dict[str, np.ndarray]:
    """The four arrays of an IDX folder (x_train, y_train, x_test, y_test), each checked."""
    arrays = {}
    for role, names in IDX_FILES.items():
        found = _candidates(folder, role)
        if not found:
            raise ConfigError(
                f"{key_name}={str(folder)!r}: no {names[0]} (or {names[1]}, either may end "
                "in .gz); an IDX folder holds the four files of train/t10k images and labels"
            )
        arrays[role] = read_idx(found[0], dimensions=3 if role.startswith("x") else 1)
    return arrays


def read_idx(path: Path, dimensions: int) -> np.ndarray:
    """One IDX file of unsigned bytes with ``dimensions`` dimensions, as a NumPy array."""
    payload = _read_bytes(path)
    where = f"IDX file {str(path)!r}"
    if len(payload) < 4 or payload[0] != 0 or payload[1] != 0:
        raise ConfigError(f"{where}: not an IDX file (bad magic number)")
    type_code, ndim = payload[2], payload[3]
    if type_code != UNSIGNED_BYTE:
        raise ConfigError(
            f"{where}: values of type 0x{type_code:02X}; expected unsigned bytes (0x08)"
        )
    if ndim != dimensions:
        raise ConfigError(f"{where}: {ndim} dimensions; expected {dimensions}")
    header = 4 + 4 * ndim
    if len(payload) < header:
        raise ConfigError(f"{where}: truncated inside its header")
    shape = tuple(int(size) for size in np.frombuffer(payload, ">u4", ndim, offset=4))
    expected = int(np.prod(shape))
    found = len(payload) - header
    if found != expected:
        problem = "truncated" if found < expected else "has trailing bytes"
        raise ConfigError(
            f"{where}: {problem}: its header announces {' x '.join(map(str, shape))} "
            f"= {expected:,} values, the file holds {found:,}"
        )
    return np.frombuffer(payload, np.uint8, offset=header).reshape(shape)


def _candidates(folder: Path, role: str) -> list[Path]:
    names = IDX_FILES[role]
    return [
        folder / f"{name}{suffix}"
        for name in names
        for suffix in ("", ".gz")
        if (folder / f"{name}{suffix}").is_file()
    ]


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as stream:
                return stream.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as error:
        raise ConfigError(f"IDX file {str(path)!r}: unreadable ({error})") from None
