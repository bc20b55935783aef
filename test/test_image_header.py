"""Image sizes read from headers: exact for real files, and bombs refused before decoding."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from photos import photo
from PIL import Image

from offline_tools.fixtures import decompression_bomb
from skp_core.image_header import PixelLimitError, check_pixel_limit, header_size


def _encoded(array: np.ndarray, image_format: str, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=image_format, **options)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("image_format", "options"),
    [
        ("JPEG", {}),
        ("JPEG", {"progressive": True}),  # SOF2, not SOF0
        ("JPEG", {"exif": b"Exif\x00\x00" + b"\x00" * 30_000}),  # a large APP1 before the SOF
        ("PNG", {}),
        ("WEBP", {}),  # through Pillow's lazy header read
        ("BMP", {}),
        ("TIFF", {}),
    ],
)
def test_header_size_matches_the_decoded_size(image_format: str, options: dict) -> None:
    for name in ("chelsea", "rocket"):  # landscape and portrait, width != height
        array = photo(name)
        data = _encoded(array, image_format, **options)
        height, width = array.shape[:2]
        assert header_size(data) == (width, height), (name, image_format)


def test_grey_png_and_a_file_path(tmp_path: Path) -> None:
    grey = photo("coffee")[:123, :77, 0]
    path = tmp_path / "grey.png"
    path.write_bytes(_encoded(grey, "PNG"))
    assert header_size(path) == (77, 123) == check_pixel_limit(path)


@pytest.mark.parametrize("image_format", ["JPEG", "PNG"])
def test_bombs_are_refused_from_the_header(tmp_path: Path, image_format: str) -> None:
    data = decompression_bomb(image_format)
    assert len(data) < 10_000
    with pytest.raises(PixelLimitError, match=r"16000x16000 \(256000000 pixels\)"):
        check_pixel_limit(data)
    path = tmp_path / "bomb"
    path.write_bytes(data)
    with pytest.raises(PixelLimitError, match="refused without decoding"):
        check_pixel_limit(path, max_pixels=1_000_000)
    assert check_pixel_limit(data, max_pixels=256_000_000) == (16000, 16000)


def test_unknown_or_broken_headers_are_left_to_the_decoder() -> None:
    jpeg = _encoded(photo("chelsea"), "JPEG")
    assert header_size(b"") is None
    assert header_size(b"not an image at all") is None
    assert header_size(jpeg[:40]) is None  # truncated before the frame header
    assert header_size(b"\x89PNG\r\n\x1a\n\x00\x00") is None
    assert check_pixel_limit(b"garbage") is None
