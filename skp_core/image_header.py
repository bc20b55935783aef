"""Image dimensions from the file header, so a decompression bomb is refused before decoding.

A few hundred bytes of JPEG can claim 16000x16000 pixels: decoding it allocates gigabytes
before any size check on the decoded array can run. The node (camera messages) and skp-train
(image folders) therefore read the width and height from the header first: JPEG's start of
frame segment and PNG's IHDR chunk are parsed here directly (a few reads, no decoder); other
formats go through Pillow's lazy open, which reads the header only.
"""

from __future__ import annotations

import io
import struct
import warnings
from pathlib import Path
from typing import BinaryIO

MAX_IMAGE_PIXELS = 8192 * 8192
"""Default limit: 67 Mpx, above any camera or photo the method can use (it resizes to 512)."""

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Start-of-frame markers: C0..CF except DHT (C4), JPG (C8) and DAC (CC).
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD9)})


class PixelLimitError(ValueError):
    """An image whose header claims more pixels than allowed; it was not decoded."""


def _jpeg_size(stream: BinaryIO) -> tuple[int, int] | None:
    """Walk the marker segments up to the first start-of-frame; None if there is none."""
    while True:
        byte = stream.read(1)
        if not byte:
            return None
        if byte != b"\xff":
            continue  # tolerate padding between segments, as decoders do
        marker = stream.read(1)
        while marker == b"\xff":  # fill bytes
            marker = stream.read(1)
        if not marker:
            return None
        code = marker[0]
        if code in _JPEG_STANDALONE:
            continue
        if code in (0xD9, 0xDA):  # end of image, or scan data before any frame header
            return None
        raw = stream.read(2)
        if len(raw) < 2:
            return None
        length = int.from_bytes(raw, "big")
        if length < 2:
            return None
        if code in _JPEG_SOF:
            frame = stream.read(5)
            if len(frame) < 5:
                return None
            _, height, width = struct.unpack(">BHH", frame)
            # Height 0 means "given later by a DNL marker": unknown from the header.
            return (width, height) if height else None
        stream.seek(length - 2, io.SEEK_CUR)


def _png_size(head: bytes) -> tuple[int, int] | None:
    if len(head) < 24 or head[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", head[16:24])
    return width, height


def _pillow_size(stream: BinaryIO) -> tuple[int, int] | None:
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(stream) as handle:  # lazy: reads the header only
                return handle.size
    except Image.DecompressionBombError as error:
        raise PixelLimitError(f"header claims too many pixels ({error})") from None
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError):
        return None  # not an image Pillow knows: the decoder will say what is wrong


def header_size(source: bytes | bytearray | memoryview | str | Path) -> tuple[int, int] | None:
    """(width, height) claimed by an image's header (bytes or a file), or None if unknown."""
    if isinstance(source, str | Path):
        with open(source, "rb") as handle:
            return _stream_size(handle)
    return _stream_size(io.BytesIO(bytes(source)))


def _stream_size(stream: BinaryIO) -> tuple[int, int] | None:
    head = stream.read(24)
    if head.startswith(_PNG_SIGNATURE):
        return _png_size(head)
    stream.seek(0)
    if head.startswith(b"\xff\xd8"):
        stream.seek(2)
        return _jpeg_size(stream)
    return _pillow_size(stream)


def check_pixel_limit(
    source: bytes | bytearray | memoryview | str | Path, max_pixels: int = MAX_IMAGE_PIXELS
) -> tuple[int, int] | None:
    """Raise PixelLimitError if the header claims more than ``max_pixels``; return its size."""
    size = header_size(source)
    if size is not None and size[0] * size[1] > max_pixels:
        width, height = size
        raise PixelLimitError(
            f"its header says {width}x{height} ({width * height} pixels), more than the limit "
            f"of {max_pixels}; refused without decoding (a decompression bomb, or a corrupt "
            f"header)"
        )
    return size


__all__ = ["MAX_IMAGE_PIXELS", "PixelLimitError", "check_pixel_limit", "header_size"]
