"""Convert between ROS 2 image messages and numpy arrays without cv_bridge.

cv_bridge is not installable everywhere (PyPI's ``cv-bridge`` is a ROS 1 port that breaks on
numpy 2 / OpenCV 5 and mis-handles 16UC1), so the node converts images with this tested numpy
code.

Decoding (``sensor_msgs/Image`` -> RGB ``uint8`` [H, W, 3]):

* ``rgb8``, ``bgr8``, ``rgba8``, ``bgra8``, ``mono8``; ``8UC1`` is mono, ``8UC3`` is BGR and
  ``8UC4`` is BGRA (the OpenCV convention, as cv_bridge assumes). Alpha is dropped.
* ``rgb16``, ``bgr16``, ``rgba16``, ``bgra16``, ``mono16``, ``16UC3`` (BGR), ``16UC4`` (BGRA):
  intensity images spanning the full 16-bit range, reduced to 8 bits by ``value >> 8``
  (fixed, so the brightness never flickers from frame to frame).
* ``16UC1`` (depth in mm) and ``32FC1`` (depth in m): depth-like, so ``>> 8`` would be black.
  Valid pixels are mapped linearly from ``[lo, hi]`` to ``[0, 255]``, where ``[lo, hi]`` is the
  per-image min/max of the valid pixels unless a fixed ``depth_range`` is given (use one for
  a stable display). Invalid pixels (0, NaN, +-inf, following REP 118) become 0. If all valid
  pixels share one value they become 128.
* ``yuv422``/``uyvy`` (UYVY) and ``yuv422_yuy2``/``yuyv`` (YUYV), as USB cameras publish.

Every message field is checked (encoding, width/height, ``step``, data length, a pixel limit),
``step`` padding and ``is_bigendian`` are honoured, and any malformed input raises
:class:`ImageConversionError` and nothing else, so a bad frame from a driver can be counted and
skipped instead of killing the node. An ``rgb8`` message without row padding is returned as a
zero-copy view of ``msg.data`` (pass ``copy=True`` to get an independent array).
"""

from __future__ import annotations

import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from skp_core.image_header import MAX_IMAGE_PIXELS, PixelLimitError, check_pixel_limit
from skp_ros.headers import copy_header

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "SUPPORTED_ENCODINGS",
    "ImageConversionError",
    "array_to_image_msg",
    "compressed_msg_to_rgb",
    "image_msg_to_array",
    "image_msg_to_rgb",
    "rgb_to_compressed_msg",
    "rgb_to_image_msg",
]

DEFAULT_MAX_PIXELS = MAX_IMAGE_PIXELS
"""Largest width * height accepted: a guard against corrupt headers asking for huge buffers."""

# Size of the ConfigHeader (format enum + two float depth-quantization parameters) that
# compressed_depth_image_transport puts in front of the PNG payload.
_COMPRESSED_DEPTH_HEADER_BYTES = 12


class ImageConversionError(ValueError):
    """An image message could not be converted; the message says which field was wrong."""


@dataclass(frozen=True, slots=True)
class _Layout:
    """How one encoding stores a pixel, so decoding is table-driven instead of a long if-chain."""

    channels: int  # values per pixel in the buffer
    dtype: str  # numpy element type without byte order: "u1", "u2" or "f4"
    order: str  # "rgb", "bgr", "rgba", "bgra", "mono", "uyvy" or "yuyv"
    depth: bool = False  # depth-like: min/max normalised instead of shifted


_LAYOUTS: dict[str, _Layout] = {
    "rgb8": _Layout(3, "u1", "rgb"),
    "bgr8": _Layout(3, "u1", "bgr"),
    "rgba8": _Layout(4, "u1", "rgba"),
    "bgra8": _Layout(4, "u1", "bgra"),
    "mono8": _Layout(1, "u1", "mono"),
    "8uc1": _Layout(1, "u1", "mono"),
    "8uc3": _Layout(3, "u1", "bgr"),
    "8uc4": _Layout(4, "u1", "bgra"),
    "rgb16": _Layout(3, "u2", "rgb"),
    "bgr16": _Layout(3, "u2", "bgr"),
    "rgba16": _Layout(4, "u2", "rgba"),
    "bgra16": _Layout(4, "u2", "bgra"),
    "mono16": _Layout(1, "u2", "mono"),
    "16uc3": _Layout(3, "u2", "bgr"),
    "16uc4": _Layout(4, "u2", "bgra"),
    "16uc1": _Layout(1, "u2", "mono", depth=True),
    "32fc1": _Layout(1, "f4", "mono", depth=True),
    "yuv422": _Layout(2, "u1", "uyvy"),
    "uyvy": _Layout(2, "u1", "uyvy"),
    "yuv422_yuy2": _Layout(2, "u1", "yuyv"),
    "yuyv": _Layout(2, "u1", "yuyv"),
}

SUPPORTED_ENCODINGS: tuple[str, ...] = tuple(
    name.upper() if name[0].isdigit() else name for name in _LAYOUTS
)
"""Encodings accepted by :func:`image_msg_to_rgb` (matched case-insensitively)."""

# Channel selection (as slices, so they stay views) that puts colour channels in RGB order.
_RGB_CHANNELS: dict[str, slice] = {
    "rgb": slice(0, 3),
    "rgba": slice(0, 3),
    "bgr": slice(2, None, -1),
    "bgra": slice(2, None, -1),
    "mono": slice(0, 1),
}

_BGR_TO_RGB: dict[str, int] = {"bgr": cv2.COLOR_BGR2RGB, "bgra": cv2.COLOR_BGRA2RGB}

_YUV_TO_RGB: dict[str, int] = {
    "uyvy": cv2.COLOR_YUV2RGB_UYVY,
    "yuyv": cv2.COLOR_YUV2RGB_YUY2,
}

# Errors that numpy / OpenCV raise on garbage input; turned into ImageConversionError.
_DECODE_ERRORS = (ValueError, TypeError, OverflowError, BufferError, IndexError, cv2.error)


def _byte_buffer(data: Any, what: str = "data") -> np.ndarray:
    """View a message's uint8[] field as a flat uint8 array, without copying where possible.

    rclpy stores uint8[] fields as ``array.array('B')``; hand-built or deserialised messages
    may hold bytes, bytearray, memoryview, a numpy array or a list, so all are accepted.
    """
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8:
            raise ImageConversionError(f"{what} is a numpy array of {data.dtype}, expected uint8")
        return data.reshape(-1)
    if isinstance(data, array.array) and data.typecode != "B":
        raise ImageConversionError(
            f"{what} is an array.array of typecode {data.typecode!r}, expected 'B'"
        )
    if isinstance(data, (bytes, bytearray, memoryview, array.array)):
        try:
            return np.frombuffer(data, dtype=np.uint8)
        except (ValueError, TypeError, BufferError) as exc:
            raise ImageConversionError(f"{what} is not a contiguous byte buffer: {exc}") from exc
    if isinstance(data, Sequence) and not isinstance(data, str):
        if len(data) == 0:
            return np.zeros(0, dtype=np.uint8)
        try:
            values = np.asarray(data)
        except (ValueError, TypeError, OverflowError) as exc:
            raise ImageConversionError(f"{what} is not a sequence of bytes: {exc}") from exc
        if values.ndim != 1 or values.dtype.kind not in "iu":
            raise ImageConversionError(f"{what} is not a flat sequence of integers")
        if values.min() < 0 or values.max() > 255:
            raise ImageConversionError(f"{what} holds values outside 0..255")
        return values.astype(np.uint8)
    raise ImageConversionError(f"{what} has unsupported type {type(data).__name__}")


def _uint_field(msg: Any, name: str) -> int:
    """Read a non-negative integer field, rejecting anything else with a clear message."""
    value = getattr(msg, name, None)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ImageConversionError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def _str_field(msg: Any, name: str) -> str:
    """Read a string field, rejecting non-strings with a clear message."""
    value = getattr(msg, name, None)
    if not isinstance(value, str):
        raise ImageConversionError(f"{name} must be a string, got {type(value).__name__}")
    return value


def _check_max_pixels(max_pixels: int) -> None:
    """Reject a nonsensical limit early: it is a programming error, not bad input."""
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels <= 0:
        raise ValueError(f"max_pixels must be a positive int, got {max_pixels!r}")


def _checked_view(msg: Image, max_pixels: int) -> tuple[np.ndarray, _Layout]:
    """Validate every field and return the [H, W, C] view of msg.data and its layout."""
    encoding = _str_field(msg, "encoding")
    layout = _LAYOUTS.get(encoding.strip().lower())
    if layout is None:
        raise ImageConversionError(
            f"unsupported encoding {encoding!r}; supported: {', '.join(SUPPORTED_ENCODINGS)}"
        )
    height = _uint_field(msg, "height")
    width = _uint_field(msg, "width")
    step = _uint_field(msg, "step")
    big_endian = _uint_field(msg, "is_bigendian") != 0
    if height == 0 or width == 0:
        raise ImageConversionError(f"empty image: {width}x{height} ({encoding})")
    if height * width > max_pixels:
        raise ImageConversionError(
            f"image {width}x{height} has {height * width} pixels, more than max_pixels={max_pixels}"
        )
    if layout.order in _YUV_TO_RGB and width % 2:
        raise ImageConversionError(f"{encoding} needs an even width, got {width}")
    itemsize = np.dtype(layout.dtype).itemsize
    row_bytes = width * layout.channels * itemsize
    if step < row_bytes:
        raise ImageConversionError(
            f"step {step} is smaller than one row of {width} {encoding} pixels ({row_bytes} bytes)"
        )
    buffer = _byte_buffer(getattr(msg, "data", None))
    expected = step * height
    if buffer.size != expected:
        problem = "truncated" if buffer.size < expected else "too long"
        raise ImageConversionError(
            f"data {problem}: {buffer.size} bytes, but step * height = {step} * {height} = "
            f"{expected} ({width}x{height} {encoding})"
        )
    dtype = np.dtype(layout.dtype).newbyteorder(">" if big_endian else "<")
    view = np.ndarray(
        shape=(height, width, layout.channels),
        dtype=dtype,
        buffer=buffer,
        strides=(step, layout.channels * itemsize, itemsize),
    )
    return view, layout


def image_msg_to_array(msg: Image, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Return the pixels as stored: [H, W, C] of uint8/uint16/float32 in native byte order.

    Channels keep the message's order (BGR stays BGR; YUV is [H, W, 2]). Useful for depth
    values in their real units. A view of ``msg.data`` when no byte swap is needed (it may then
    be non-contiguous when rows are padded). Raises :class:`ImageConversionError`.
    """
    _check_max_pixels(max_pixels)
    try:
        view, _ = _checked_view(msg, max_pixels)
        if not view.dtype.isnative:
            view = view.astype(view.dtype.newbyteorder("="))
        return view
    except ImageConversionError:
        raise
    except _DECODE_ERRORS as exc:
        raise ImageConversionError(f"malformed image message: {exc}") from exc


def _depth_to_gray(depth: np.ndarray, depth_range: tuple[float, float] | None) -> np.ndarray:
    """Map valid depth linearly to 0..255 and invalid (0, NaN, inf) to 0, as documented above."""
    values = depth.astype(np.float64)
    valid = np.isfinite(values) & (values != 0)
    out = np.zeros(values.shape, dtype=np.uint8)
    if not valid.any():
        return out
    if depth_range is None:
        lo = float(values[valid].min())
        hi = float(values[valid].max())
    else:
        lo, hi = depth_range
    if hi <= lo:
        out[valid] = 128
        return out
    with np.errstate(invalid="ignore", over="ignore"):
        scaled = np.clip((values[valid] - lo) * (255.0 / (hi - lo)), 0.0, 255.0)
    out[valid] = np.rint(scaled).astype(np.uint8)
    return out


def _check_depth_range(depth_range: tuple[float, float] | None) -> tuple[float, float] | None:
    """Validate a caller-supplied fixed depth range (a programming error if wrong)."""
    if depth_range is None:
        return None
    lo, hi = (float(v) for v in depth_range)
    if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
        raise ValueError(f"depth_range must be two finite numbers lo < hi, got {depth_range!r}")
    return lo, hi


def _gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    """Replicate a [H, W] or [H, W, 1] channel into a contiguous [H, W, 3] array."""
    height, width = gray.shape[:2]
    out = np.empty((height, width, 3), dtype=np.uint8)
    out[...] = gray.reshape(height, width, 1)
    return out


def _view_to_rgb(
    view: np.ndarray, layout: _Layout, depth_range: tuple[float, float] | None
) -> np.ndarray:
    """Turn a validated [H, W, C] view into RGB uint8, copying only when a conversion is needed."""
    if layout.order in _YUV_TO_RGB:
        return cv2.cvtColor(np.ascontiguousarray(view), _YUV_TO_RGB[layout.order])
    if layout.depth:
        return _gray_to_rgb(_depth_to_gray(view[..., 0], depth_range))
    if layout.dtype == "u1" and layout.order in _BGR_TO_RGB:
        # OpenCV swaps channels ~10x faster than numpy's copy of a reversed-stride view, and it
        # honours the row step, so padded rows need no extra copy.
        return cv2.cvtColor(view, _BGR_TO_RGB[layout.order])
    channels = view[..., _RGB_CHANNELS[layout.order]]
    if layout.dtype == "u2":
        channels = (channels >> 8).astype(np.uint8)
    if layout.order == "mono":
        return _gray_to_rgb(channels)
    return np.ascontiguousarray(channels)


def image_msg_to_rgb(
    msg: Image,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    depth_range: tuple[float, float] | None = None,
    copy: bool = False,
) -> np.ndarray:
    """Convert a ``sensor_msgs/Image`` to a C-contiguous RGB uint8 array [H, W, 3].

    See the module docstring for the encodings and how 16-bit and depth images are scaled.
    ``depth_range`` fixes the 16UC1/32FC1 display range (message units) instead of per-image
    min/max. Without ``copy`` an unpadded rgb8 message is returned as a view of ``msg.data``
    (read-only if the data is ``bytes``). Raises :class:`ImageConversionError` on bad input.
    """
    _check_max_pixels(max_pixels)
    fixed_range = _check_depth_range(depth_range)
    try:
        view, layout = _checked_view(msg, max_pixels)
        rgb = _view_to_rgb(view, layout, fixed_range)
        if copy and np.may_share_memory(rgb, view):
            rgb = rgb.copy()
        return rgb
    except ImageConversionError:
        raise
    except _DECODE_ERRORS as exc:
        raise ImageConversionError(f"malformed image message: {exc}") from exc


def _decoded_to_rgb(
    image: np.ndarray, source_encoding: str, depth_range: tuple[float, float] | None
) -> np.ndarray:
    """Map what cv2.imdecode returned (gray/BGR/BGRA, 8 or 16 bit) to RGB uint8."""
    if image.dtype == np.uint16:
        if image.ndim == 2 and source_encoding == "16uc1":
            return _gray_to_rgb(_depth_to_gray(image, depth_range))
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ImageConversionError(f"decoded image has unsupported element type {image.dtype}")
    if image.ndim == 2:
        return _gray_to_rgb(image)
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    raise ImageConversionError(f"decoded image has unsupported shape {image.shape}")


def _compressed_to_rgb(
    msg: CompressedImage, max_pixels: int, depth_range: tuple[float, float] | None
) -> np.ndarray:
    """Decode a CompressedImage; the body of :func:`compressed_msg_to_rgb`."""
    fmt = _str_field(msg, "format")
    buffer = _byte_buffer(getattr(msg, "data", None))
    if buffer.size == 0:
        raise ImageConversionError(f"CompressedImage has no data (format {fmt!r})")
    source_encoding = fmt.split(";", 1)[0].strip().lower() if ";" in fmt else ""
    if "compresseddepth" in fmt.lower():
        # compressed_depth_image_transport: 12-byte ConfigHeader, then a 16-bit PNG for 16UC1
        # (older versions write "16UC1; compressedDepth" with PNG implied).
        if source_encoding != "16uc1" or "rvl" in fmt.lower():
            raise ImageConversionError(
                f"compressedDepth format {fmt!r} is not supported (only 16UC1 PNG)"
            )
        if buffer.size <= _COMPRESSED_DEPTH_HEADER_BYTES:
            raise ImageConversionError("compressedDepth data is shorter than its 12-byte header")
        buffer = buffer[_COMPRESSED_DEPTH_HEADER_BYTES:]
    try:
        check_pixel_limit(buffer.tobytes(), max_pixels)
    except PixelLimitError as exc:
        raise ImageConversionError(f"compressed image (format {fmt!r}): {exc}") from None
    image = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise ImageConversionError(
            f"could not decode {buffer.size} bytes of compressed image data (format {fmt!r})"
        )
    height, width = image.shape[:2]
    if height * width > max_pixels:
        raise ImageConversionError(
            f"decoded image {width}x{height} exceeds max_pixels={max_pixels}"
        )
    return _decoded_to_rgb(image, source_encoding, depth_range)


def compressed_msg_to_rgb(
    msg: CompressedImage,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    depth_range: tuple[float, float] | None = None,
) -> np.ndarray:
    """Decode a ``sensor_msgs/CompressedImage`` (JPEG, PNG, ...) to RGB uint8 [H, W, 3].

    The ``format`` field may be plain ("jpeg", "png") or image_transport style
    ("rgb8; jpeg compressed bgr8"); the payload is decoded by content, since image_transport
    always stores a standard (BGR-ordered) file. 16-bit PNGs are reduced with ``>> 8`` unless
    the source encoding is 16UC1, which is depth-normalised like :func:`image_msg_to_rgb`;
    "16UC1; compressedDepth png" is supported too. OpenCV's own pixel limit also applies
    while decoding. Corrupt or empty data raises :class:`ImageConversionError`.
    """
    _check_max_pixels(max_pixels)
    fixed_range = _check_depth_range(depth_range)
    try:
        return _compressed_to_rgb(msg, max_pixels, fixed_range)
    except ImageConversionError:
        raise
    except _DECODE_ERRORS as exc:
        raise ImageConversionError(f"malformed compressed image message: {exc}") from exc


def _bytes_field(values: np.ndarray) -> array.array:
    """Pack a contiguous array into ``array.array('B')`` with one copy.

    With field checks on (ROS_PYTHON_CHECK_FIELDS=1) assigning ``bytes`` to a uint8[] field
    makes rclpy check every byte in Python (seconds for a large image); an
    ``array.array('B')`` is always stored as is.
    """
    packed = array.array("B")
    packed.frombytes(np.ascontiguousarray(values).reshape(-1).view(np.uint8))
    return packed


def array_to_image_msg(
    pixels: np.ndarray,
    encoding: str,
    header: Header | None = None,
    *,
    step: int | None = None,
    is_bigendian: bool = False,
) -> Image:
    """Store an array as-is under ``encoding`` (channels and values are not converted).

    ``pixels`` must match the encoding: [H, W] or [H, W, C] with C channels of its type
    (uint8, uint16 or float32). ``step`` may add row padding (zero-filled); ``is_bigendian``
    writes multi-byte values big-endian. Used for depth output and to build test messages.
    """
    layout = _LAYOUTS.get(encoding.strip().lower())
    if layout is None:
        raise ImageConversionError(f"unsupported encoding {encoding!r}")
    values = np.asarray(pixels)
    if values.ndim == 2:
        values = values[:, :, np.newaxis]
    if values.ndim != 3 or values.shape[2] != layout.channels:
        raise ImageConversionError(
            f"{encoding} needs [H, W, {layout.channels}] pixels, got shape {np.shape(pixels)}"
        )
    if values.dtype != np.dtype(layout.dtype):
        raise ImageConversionError(f"{encoding} needs {np.dtype(layout.dtype)}, got {values.dtype}")
    height, width = values.shape[:2]
    if height == 0 or width == 0:
        raise ImageConversionError(f"cannot publish an empty {width}x{height} image")
    row_bytes = width * layout.channels * values.dtype.itemsize
    step = row_bytes if step is None else int(step)
    if step < row_bytes:
        raise ImageConversionError(f"step {step} is smaller than a row ({row_bytes} bytes)")
    stored = values.astype(values.dtype.newbyteorder(">" if is_bigendian else "<"), copy=False)
    rows = np.ascontiguousarray(stored).reshape(height, row_bytes // values.dtype.itemsize)
    byte_rows = rows.view(np.uint8)
    if step > row_bytes:
        byte_rows = np.pad(byte_rows, ((0, 0), (0, step - row_bytes)))
    return Image(
        header=copy_header(header),
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=1 if is_bigendian else 0,
        step=step,
        data=_bytes_field(byte_rows),
    )


def _check_rgb_input(rgb: np.ndarray, allow_gray: bool) -> np.ndarray:
    """Accept uint8 [H, W, 3] (and [H, W] / [H, W, 1] gray where allowed) or say what is wrong."""
    values = np.asarray(rgb)
    if values.dtype != np.uint8:
        raise ImageConversionError(f"expected a uint8 image, got {values.dtype}")
    if values.ndim == 3 and values.shape[2] == 1 and allow_gray:
        values = values[:, :, 0]
    is_rgb = values.ndim == 3 and values.shape[2] == 3
    if not (is_rgb or (allow_gray and values.ndim == 2)):
        expected = "[H, W, 3] or [H, W]" if allow_gray else "[H, W, 3]"
        raise ImageConversionError(f"expected a {expected} image, got shape {values.shape}")
    if values.shape[0] == 0 or values.shape[1] == 0:
        raise ImageConversionError(f"cannot encode an empty image of shape {values.shape}")
    return values


def rgb_to_image_msg(
    rgb: np.ndarray, header: Header | None = None, encoding: str = "rgb8"
) -> Image:
    """Build a ``sensor_msgs/Image`` from an RGB uint8 [H, W, 3] array (debug overlays, bags).

    ``encoding`` is "rgb8", "bgr8" (channels reversed) or "mono8" (RGB converted to gray with
    OpenCV's weights; a [H, W] gray array is also accepted). The header is copied.
    """
    kind = encoding.strip().lower()
    if kind not in ("rgb8", "bgr8", "mono8"):
        raise ImageConversionError(f"rgb_to_image_msg supports rgb8, bgr8, mono8, not {encoding!r}")
    values = _check_rgb_input(rgb, allow_gray=kind == "mono8")
    if kind == "bgr8":
        values = values[:, :, ::-1]
    elif kind == "mono8" and values.ndim == 3:
        values = cv2.cvtColor(np.ascontiguousarray(values), cv2.COLOR_RGB2GRAY)
    return array_to_image_msg(values, kind, header)


def rgb_to_compressed_msg(
    rgb: np.ndarray, header: Header | None = None, fmt: str = "jpeg", quality: int = 90
) -> CompressedImage:
    """Encode an RGB uint8 [H, W, 3] (or gray [H, W]) array as a ``sensor_msgs/CompressedImage``.

    The ``format`` field follows image_transport ("rgb8; jpeg compressed bgr8"), so standard
    subscribers and :func:`compressed_msg_to_rgb` decode it. ``quality`` (1..100) is the JPEG
    quality; PNG is lossless.
    """
    kind = fmt.strip().lower()
    if kind == "jpg":
        kind = "jpeg"
    if kind not in ("jpeg", "png"):
        raise ImageConversionError(f"fmt must be 'jpeg' or 'png', got {fmt!r}")
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
        raise ImageConversionError(f"quality must be an int in 1..100, got {quality!r}")
    values = _check_rgb_input(rgb, allow_gray=True)
    if values.ndim == 3:
        image = cv2.cvtColor(np.ascontiguousarray(values), cv2.COLOR_RGB2BGR)
        format_field = f"rgb8; {kind} compressed bgr8"
    else:
        image = np.ascontiguousarray(values)
        format_field = f"mono8; {kind} compressed mono8"
    if kind == "jpeg":
        params = [cv2.IMWRITE_JPEG_QUALITY, quality]
    else:
        params = [cv2.IMWRITE_PNG_COMPRESSION, 3]
    ok, encoded = cv2.imencode(f".{'jpg' if kind == 'jpeg' else 'png'}", image, params)
    if not ok:
        raise ImageConversionError(f"OpenCV could not encode a {image.shape} image as {kind}")
    return CompressedImage(
        header=copy_header(header), format=format_field, data=_bytes_field(encoded)
    )
