"""Turn arbitrary digit images (any mode, size, polarity) into MNIST-style model input.

The preprocessing follows how MNIST itself was made: the digit is cropped, scaled so its
longer side is 20 pixels, and placed in a 28x28 black field so that its centre of mass is at
the centre (14, 14). Only NumPy and Pillow are needed.
"""

from __future__ import annotations

import os
import re
import stat
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

SIZE = 28  # MNIST field
BOX = 20  # the digit's longer side inside the field
INK = 0.1  # pixels above this fraction of the peak (after background removal) bound the digit
NOISE = 0.02  # pixels below this fraction of the peak are zeroed as background noise
MIN_CONTRAST = 16  # a peak below this (out of 255) above the background means a blank image
# Largest image decoded: ~1.4x a 6000x4000 photo, far above any digit scan. Decoding costs
# several bytes per pixel, so a small file declaring a huge size is refused from its header.
MAX_PIXELS = 40_000_000


class ImageError(ValueError):
    """A file is missing, unreadable or not an image; the message is one line naming it."""


def _megapixels(pixels: int) -> str:
    """``pixels`` in megapixels, one decimal at most: ``40``, ``144``, ``12.5``."""
    return f"{pixels / 1e6:.1f}".removesuffix(".0")


def _too_large(path: str | Path, dimensions: str, pixels: int | None) -> ImageError:
    """The one-line error for an image whose header declares more than MAX_PIXELS pixels."""
    size = f"{dimensions}{_megapixels(pixels)} megapixels" if pixels else "size not read"
    limit = _megapixels(MAX_PIXELS)
    return ImageError(f"{path}: image too large ({size}; the limit is {limit} megapixels)")


def _open_regular(path: str | Path) -> int:
    """An open read-only descriptor of ``path`` if it is a regular file, or raise ImageError.

    Named pipes, devices and sockets are refused before anything reads them (a pipe would
    block forever); the descriptor is opened non-blocking and checked again, so a file
    swapped for a pipe in between is refused too.
    """
    try:
        mode = os.stat(path).st_mode
        if stat.S_ISDIR(mode):
            raise ImageError(f"{path}: is a directory, not an image file")
        if not stat.S_ISREG(mode):
            raise ImageError(f"{path}: not a regular file")
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except PermissionError:
        raise ImageError(f"{path}: permission denied") from None
    except OSError as error:
        raise ImageError(f"{path}: unreadable image ({error.strerror})") from None
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise ImageError(f"{path}: not a regular file")
    return descriptor


def _read_gray(path: str | Path) -> np.ndarray:
    """Decode ``path`` into a float64 grayscale array in 0..255, or raise ImageError."""
    descriptor = _open_regular(path)
    try:
        with os.fdopen(descriptor, "rb") as handle, warnings.catch_warnings():
            # Pillow warns (stderr) above its own limit; ours is lower and checked below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(handle) as opened:  # reads the header only
                width, height = opened.size
                if width * height > MAX_PIXELS:
                    raise _too_large(path, f"{width}x{height} pixels = ", width * height)
                opened.load()
                image = ImageOps.exif_transpose(opened)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image file (cannot identify image file)") from None
    except Image.DecompressionBombError as error:  # over twice Pillow's limit, raised in open
        declared = re.search(r"\((\d+) pixels\)", str(error))
        raise _too_large(path, "", int(declared[1]) if declared else None) from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        raise ImageError(f"{path}: unreadable image ({reason})") from None

    if image.mode in ("I", "F") or image.mode.startswith("I;"):  # 16/32-bit and float
        values = np.asarray(image, dtype=np.float64)
        low, high = values.min(), values.max()
        return (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
    if image.has_transparency_data:
        # Composite onto a backdrop that contrasts with the visible strokes: white for dark
        # ink (the usual case), black for light ink, so neither vanishes.
        rgba = image.convert("RGBA")
        alpha = np.asarray(rgba.getchannel("A"), dtype=np.float64)
        ink = np.asarray(rgba.convert("L"), dtype=np.float64)
        light_ink = alpha.sum() > 0 and (ink * alpha).sum() / alpha.sum() > 127
        backdrop = Image.new("RGBA", rgba.size, (0, 0, 0, 255) if light_ink else (255,) * 4)
        image = Image.alpha_composite(backdrop, rgba)
    return np.asarray(image.convert("L"), dtype=np.float64)


def _to_mnist(gray: np.ndarray) -> np.ndarray:
    """Normalise a 2-D grayscale array (0..255, any polarity) into a flat MNIST-style input.

    Returns float32 of shape (784,) in [0, 1]: a white digit on black, longer side 20 pixels,
    centre of mass at (14, 14) of the 28x28 field. A blank image gives all zeros.
    """
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    background = float(np.median(border))
    if background > 127:  # light background: dark ink on paper, so invert like MNIST
        gray, background = 255.0 - gray, 255.0 - background
    digit = np.clip(gray - background, 0, None)
    peak = digit.max()
    if peak < MIN_CONTRAST:
        return np.zeros(SIZE * SIZE, dtype=np.float32)
    digit = digit * (255.0 / peak)
    digit[digit < NOISE * 255] = 0
    ink = digit > INK * 255
    rows, cols = np.nonzero(ink.any(axis=1))[0], np.nonzero(ink.any(axis=0))[0]
    digit = digit[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]

    height, width = digit.shape
    scale = BOX / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = Image.fromarray(digit.astype(np.float32)).resize(size, Image.Resampling.LANCZOS)
    digit = np.clip(np.asarray(resized, dtype=np.float64), 0, 255)

    # Place the digit so its centre of mass lands on (14, 14); the margin absorbs overflow.
    ys, xs = np.indices(digit.shape)
    mass = digit.sum()
    if mass <= 0:
        return np.zeros(SIZE * SIZE, dtype=np.float32)
    top = BOX + round(SIZE / 2 - (ys * digit).sum() / mass)
    left = BOX + round(SIZE / 2 - (xs * digit).sum() / mass)
    field = np.zeros((SIZE + 2 * BOX, SIZE + 2 * BOX))
    field[top : top + digit.shape[0], left : left + digit.shape[1]] = digit
    field = field[BOX : BOX + SIZE, BOX : BOX + SIZE]
    return (field / 255.0).astype(np.float32).ravel()


def load_digit(path: str | Path) -> np.ndarray:
    """Load one digit image as MNIST-style model input: float32, shape (784,), in [0, 1].

    Any Pillow-readable mode and size works; dark-on-light images are inverted. Raises
    ImageError (one line naming ``path``) if the file is missing, unreadable or not an image.
    """
    return _to_mnist(_read_gray(path))


def load_digits(paths: Iterable[str | Path]) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """Load many digit images, keeping going past bad files.

    Returns ``(inputs, failures)``: an (n_ok, 784) float32 array of the good files in their
    given order, and one ``(path, error message)`` pair per file that failed.
    """
    inputs: list[np.ndarray] = []
    failures: list[tuple[str, str]] = []
    for path in paths:
        try:
            inputs.append(load_digit(path))
        except ImageError as error:
            failures.append((str(path), str(error)))
    if not inputs:
        return np.zeros((0, SIZE * SIZE), dtype=np.float32), failures
    return np.stack(inputs), failures
