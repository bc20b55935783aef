"""Tests for skp_ros.image_conversion on real photos and real sensor_msgs messages.

Messages are built byte by byte here (independently of the module's own encoder), so a
layout mistake shared by encoder and decoder cannot hide. No DDS is used.
"""

from __future__ import annotations

import array
from collections.abc import Callable

import cv2
import numpy as np
import pytest
import skimage.data
from builtin_interfaces.msg import Time
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from offline_tools.fixtures import decompression_bomb
from skp_ros import image_conversion as ic
from skp_ros.image_conversion import (
    DEFAULT_MAX_PIXELS,
    ImageConversionError,
    array_to_image_msg,
    compressed_msg_to_rgb,
    image_msg_to_array,
    image_msg_to_rgb,
    rgb_to_compressed_msg,
    rgb_to_image_msg,
)

ASTRONAUT = skimage.data.astronaut()  # 512 x 512
COFFEE = skimage.data.coffee()  # 400 x 600: non-square, catches width/height swaps
CHELSEA = skimage.data.chelsea()  # 300 x 451: odd width, catches stride mistakes
PAD_BYTE = 0xAB  # row padding filled with a non-zero value so reading it would show


def _header(frame_id: str = "camera_optical") -> Header:
    return Header(stamp=Time(sec=1_700_000_000, nanosec=123_456_789), frame_id=frame_id)


def _gray(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def _raw_msg(
    pixels: np.ndarray,
    encoding: str,
    *,
    pad: int = 0,
    big_endian: bool = False,
    header: Header | None = None,
) -> Image:
    """Build an Image by hand: each row's values in the requested byte order, then padding."""
    values = pixels if pixels.ndim == 3 else pixels[:, :, np.newaxis]
    height = values.shape[0]
    ordered = values.astype(values.dtype.newbyteorder(">" if big_endian else "<"))
    rows = ordered.reshape(height, -1).view(np.uint8)
    padding = np.full((height, pad), PAD_BYTE, dtype=np.uint8)
    data = np.hstack([rows, padding]).tobytes()
    return Image(
        header=header or _header(),
        height=height,
        width=values.shape[1],
        encoding=encoding,
        is_bigendian=1 if big_endian else 0,
        step=rows.shape[1] + pad,
        data=array.array("B", data),
    )


def _stretch(values: np.ndarray) -> np.ndarray:
    """The documented depth display: min..max of the valid (non-zero) values onto 0..255."""
    valid = values[values != 0].astype(np.float64)
    lo, hi = valid.min(), valid.max()
    out = np.rint((values.astype(np.float64) - lo) * (255.0 / (hi - lo)))
    return np.where(values != 0, out, 0).astype(np.uint8)


def _depth_mm(rgb: np.ndarray) -> np.ndarray:
    """A depth image in mm made from the photo: 500 mm + 10 mm per grey level."""
    return 500 + _gray(rgb).astype(np.uint16) * 10


def _with_alpha(rgb: np.ndarray) -> np.ndarray:
    alpha = np.random.default_rng(3).integers(0, 256, rgb.shape[:2], dtype=np.uint8)
    return np.dstack([rgb, alpha])


def _wide(rgb: np.ndarray) -> np.ndarray:
    """16-bit values whose high byte is the photo and low byte is noise: >> 8 must drop it."""
    noise = np.random.default_rng(4).integers(0, 256, rgb.shape, dtype=np.uint16)
    return rgb.astype(np.uint16) * 256 + noise


# encoding -> (photo RGB -> pixels as stored in the message, photo RGB -> expected output).
_CASES: dict[str, tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]]
_CASES = {
    "rgb8": (lambda p: p, lambda p: p),
    "bgr8": (lambda p: p[..., ::-1], lambda p: p),
    "8UC3": (lambda p: p[..., ::-1], lambda p: p),
    "rgba8": (_with_alpha, lambda p: p),
    "bgra8": (lambda p: _with_alpha(p[..., ::-1]), lambda p: p),
    "8UC4": (lambda p: _with_alpha(p[..., ::-1]), lambda p: p),
    "mono8": (_gray, lambda p: np.dstack([_gray(p)] * 3)),
    "8UC1": (_gray, lambda p: np.dstack([_gray(p)] * 3)),
    "rgb16": (_wide, lambda p: p),
    "bgr16": (lambda p: _wide(p[..., ::-1]), lambda p: p),
    "16UC3": (lambda p: _wide(p[..., ::-1]), lambda p: p),
    "rgba16": (lambda p: _wide(_with_alpha(p)), lambda p: p),
    "bgra16": (lambda p: _wide(_with_alpha(p[..., ::-1])), lambda p: p),
    "16UC4": (lambda p: _wide(_with_alpha(p[..., ::-1])), lambda p: p),
    "mono16": (lambda p: _wide(_gray(p)), lambda p: np.dstack([_gray(p)] * 3)),
    "16UC1": (_depth_mm, lambda p: np.dstack([_stretch(_depth_mm(p))] * 3)),
}


def _photo_cases() -> list[tuple[str, str, np.ndarray]]:
    return [
        (encoding, name, photo)
        for encoding in _CASES
        for name, photo in (("astronaut", ASTRONAUT), ("chelsea", CHELSEA))
    ]


@pytest.mark.parametrize(("encoding", "photo_name", "photo"), _photo_cases())
@pytest.mark.parametrize("pad", [0, 7])
@pytest.mark.parametrize("big_endian", [False, True])
def test_every_encoding_round_trips_with_padding_and_byte_order(
    encoding: str, photo_name: str, photo: np.ndarray, pad: int, big_endian: bool
) -> None:
    to_pixels, to_expected = _CASES[encoding]
    pixels = np.ascontiguousarray(to_pixels(photo))
    msg = _raw_msg(pixels, encoding, pad=pad, big_endian=big_endian)
    rgb = image_msg_to_rgb(msg)
    assert rgb.dtype == np.uint8
    assert rgb.shape == (*photo.shape[:2], 3)
    assert rgb.flags.c_contiguous
    np.testing.assert_array_equal(rgb, to_expected(photo), err_msg=f"{encoding} {photo_name}")
    raw = image_msg_to_array(msg)
    assert raw.dtype.isnative
    np.testing.assert_array_equal(raw.reshape(pixels.shape), pixels)


@pytest.mark.parametrize("big_endian", [False, True])
def test_float_depth_is_min_max_normalised_and_invalid_pixels_are_black(big_endian: bool) -> None:
    gray = _gray(ASTRONAUT)
    depth = (0.5 + gray.astype(np.float32) / 100.0).astype(np.float32)
    invalid = np.zeros(gray.shape, dtype=bool)
    invalid[::17, ::13] = True
    depth[invalid] = np.nan
    depth[5, 5] = np.inf
    depth[6, 6] = 0.0
    invalid[5, 5] = invalid[6, 6] = True
    rgb = image_msg_to_rgb(_raw_msg(depth, "32FC1", pad=4, big_endian=big_endian))
    assert np.all(rgb[..., 0] == rgb[..., 2])
    assert np.all(rgb[invalid] == 0)
    diff = np.abs(rgb[..., 0].astype(int) - gray.astype(int))[~invalid]
    assert diff.max() <= 1


def test_uint16_depth_zero_is_invalid_and_fixed_range_is_stable() -> None:
    gray = _gray(COFFEE).astype(np.uint16)
    depth = 1000 + gray * 4  # 1000 .. 2020 mm
    depth[:10] = 0  # no return
    msg = _raw_msg(depth, "16UC1", pad=2)
    rgb = image_msg_to_rgb(msg, depth_range=(1000.0, 2020.0))
    expected = np.rint((depth.astype(float) - 1000.0) * 255.0 / 1020.0).astype(np.uint8)
    expected[:10] = 0
    np.testing.assert_array_equal(rgb[..., 1], expected)
    # The same scene moved 2 m away: a fixed range saturates instead of renormalising.
    far = np.where(depth != 0, depth + 2000, 0).astype(np.uint16)
    far_rgb = image_msg_to_rgb(_raw_msg(far, "16UC1"), depth_range=(1000.0, 2020.0))
    assert np.all(far_rgb[10:] == 255) and np.all(far_rgb[:10] == 0)
    np.testing.assert_array_equal(image_msg_to_rgb(_raw_msg(far, "16UC1")), image_msg_to_rgb(msg))


def test_degenerate_depth_images() -> None:
    constant = np.full((4, 6), 1234, dtype=np.uint16)
    constant[0, 0] = 0
    rgb = image_msg_to_rgb(_raw_msg(constant, "16UC1"))
    assert rgb[0, 0].tolist() == [0, 0, 0]
    assert np.all(rgb.reshape(-1, 3)[1:] == 128)
    no_return = np.zeros((4, 6), dtype=np.uint16)
    assert np.all(image_msg_to_rgb(_raw_msg(no_return, "16UC1")) == 0)
    with pytest.raises(ValueError, match="depth_range"):
        image_msg_to_rgb(_raw_msg(constant, "16UC1"), depth_range=(5.0, 1.0))


def test_big_endian_bytes_by_hand() -> None:
    data = array.array("B", [0x12, 0x34, 0xAB, 0xCD])
    big = Image(height=1, width=2, encoding="mono16", is_bigendian=1, step=4, data=data)
    little = Image(height=1, width=2, encoding="mono16", is_bigendian=0, step=4, data=data)
    assert image_msg_to_array(big).reshape(-1).tolist() == [0x1234, 0xABCD]
    assert image_msg_to_array(little).reshape(-1).tolist() == [0x3412, 0xCDAB]
    assert image_msg_to_rgb(big)[0, :, 0].tolist() == [0x12, 0xAB]
    assert image_msg_to_rgb(little)[0, :, 0].tolist() == [0x34, 0xCD]


@pytest.mark.parametrize(
    ("encoding", "to_yuv"),
    [
        ("yuv422", cv2.COLOR_RGB2YUV_UYVY),
        ("uyvy", cv2.COLOR_RGB2YUV_UYVY),
        ("yuv422_yuy2", cv2.COLOR_RGB2YUV_YUY2),
        ("yuyv", cv2.COLOR_RGB2YUV_YUY2),
    ],
)
def test_yuv422_packed_formats(encoding: str, to_yuv: int) -> None:
    _check_yuv(encoding, to_yuv)


def _check_yuv(encoding: str, to_yuv: int) -> None:
    yuv = cv2.cvtColor(COFFEE, to_yuv)
    assert yuv.shape == (*COFFEE.shape[:2], 2)
    rgb = image_msg_to_rgb(_raw_msg(yuv, encoding, pad=6))
    assert rgb.shape == COFFEE.shape
    # Chroma is subsampled 2:1, so only the mean error is tight.
    assert np.abs(rgb.astype(int) - COFFEE.astype(int)).mean() < 4.0


def test_rgb8_without_padding_is_a_zero_copy_view() -> None:
    msg = rgb_to_image_msg(ASTRONAUT, _header())
    assert (msg.encoding, msg.step, msg.is_bigendian) == ("rgb8", 512 * 3, 0)
    rgb = image_msg_to_rgb(msg)
    np.testing.assert_array_equal(rgb, ASTRONAUT)
    assert np.shares_memory(rgb, np.frombuffer(msg.data, dtype=np.uint8))
    copied = image_msg_to_rgb(msg, copy=True)
    np.testing.assert_array_equal(copied, ASTRONAUT)
    assert not np.shares_memory(copied, np.frombuffer(msg.data, dtype=np.uint8))


def test_rgb_to_image_msg_layouts_and_header_copy() -> None:
    header = _header("left_camera")
    bgr = rgb_to_image_msg(COFFEE, header, encoding="bgr8")
    assert (bgr.height, bgr.width, bgr.step) == (400, 600, 1800)
    assert list(bgr.data[:3]) == COFFEE[0, 0, ::-1].tolist()
    np.testing.assert_array_equal(image_msg_to_rgb(bgr), COFFEE)
    mono = rgb_to_image_msg(COFFEE, header, encoding="mono8")
    assert mono.step == 600
    np.testing.assert_array_equal(image_msg_to_array(mono)[..., 0], _gray(COFFEE))
    mono_2d = rgb_to_image_msg(_gray(CHELSEA), encoding="mono8")
    np.testing.assert_array_equal(image_msg_to_rgb(mono_2d)[..., 2], _gray(CHELSEA))
    assert bgr.header.frame_id == "left_camera"
    assert (bgr.header.stamp.sec, bgr.header.stamp.nanosec) == (1_700_000_000, 123_456_789)
    header.frame_id = "changed"
    assert bgr.header.frame_id == "left_camera"
    with pytest.raises(ImageConversionError, match="uint8"):
        rgb_to_image_msg(COFFEE.astype(np.float32))
    with pytest.raises(ImageConversionError, match="shape"):
        rgb_to_image_msg(_gray(COFFEE), encoding="rgb8")
    with pytest.raises(ImageConversionError, match="supports"):
        rgb_to_image_msg(COFFEE, encoding="16UC1")


@pytest.mark.parametrize(
    ("encoding", "pixels"),
    [
        ("rgb8", CHELSEA),
        ("bgra8", _with_alpha(CHELSEA)),
        ("mono16", _wide(_gray(CHELSEA))),
        ("16UC1", _wide(_gray(CHELSEA))),
        ("32FC1", _gray(CHELSEA).astype(np.float32) / 7.0),
        ("yuv422", cv2.cvtColor(COFFEE, cv2.COLOR_RGB2YUV_UYVY)),
    ],
)
@pytest.mark.parametrize("big_endian", [False, True])
def test_array_to_image_msg_matches_hand_built_bytes(
    encoding: str, pixels: np.ndarray, big_endian: bool
) -> None:
    row_bytes = pixels.shape[1] * pixels[0, :1].nbytes
    ours = array_to_image_msg(pixels, encoding, step=row_bytes + 5, is_bigendian=big_endian)
    hand = _raw_msg(pixels, encoding, pad=5, big_endian=big_endian)
    assert (ours.step, ours.is_bigendian, ours.encoding) == (hand.step, hand.is_bigendian, encoding)
    as_rows = np.frombuffer(ours.data, np.uint8).reshape(ours.height, ours.step)
    hand_rows = np.frombuffer(hand.data, np.uint8).reshape(hand.height, hand.step)
    np.testing.assert_array_equal(as_rows[:, :row_bytes], hand_rows[:, :row_bytes])
    np.testing.assert_array_equal(image_msg_to_array(ours).reshape(pixels.shape), pixels)


def test_messages_survive_ros_serialization() -> None:
    msg = rgb_to_image_msg(CHELSEA, _header(), encoding="bgr8")
    back = deserialize_message(serialize_message(msg), Image)
    np.testing.assert_array_equal(image_msg_to_rgb(back), CHELSEA)
    compressed = rgb_to_compressed_msg(CHELSEA, _header(), fmt="png")
    back_c = deserialize_message(serialize_message(compressed), CompressedImage)
    np.testing.assert_array_equal(compressed_msg_to_rgb(back_c), CHELSEA)


def test_jpeg_round_trip_within_tolerance() -> None:
    msg = rgb_to_compressed_msg(ASTRONAUT, _header(), fmt="jpeg", quality=90)
    assert msg.format == "rgb8; jpeg compressed bgr8"
    assert msg.header.frame_id == "camera_optical"
    rgb = compressed_msg_to_rgb(msg)
    assert rgb.shape == ASTRONAUT.shape and rgb.dtype == np.uint8
    error = rgb.astype(float) - ASTRONAUT.astype(float)
    psnr = 10 * np.log10(255.0**2 / np.mean(error**2))
    assert psnr > 30.0
    # Colour order check: mean colour per channel matches (swapped R/B would not).
    assert np.allclose(rgb.mean(axis=(0, 1)), ASTRONAUT.mean(axis=(0, 1)), atol=2.0)
    smaller = rgb_to_compressed_msg(ASTRONAUT, fmt="jpg", quality=20)
    assert len(smaller.data) < len(msg.data)


def test_png_round_trip_is_exact_and_gray_is_supported() -> None:
    msg = rgb_to_compressed_msg(COFFEE, fmt="png")
    assert msg.format == "rgb8; png compressed bgr8"
    np.testing.assert_array_equal(compressed_msg_to_rgb(msg), COFFEE)
    gray = _gray(COFFEE)
    mono = rgb_to_compressed_msg(gray, fmt="png")
    assert mono.format == "mono8; png compressed mono8"
    np.testing.assert_array_equal(compressed_msg_to_rgb(mono), np.dstack([gray] * 3))
    with pytest.raises(ImageConversionError, match="fmt"):
        rgb_to_compressed_msg(COFFEE, fmt="webp2")
    with pytest.raises(ImageConversionError, match="quality"):
        rgb_to_compressed_msg(COFFEE, quality=0)


def _compressed(data: bytes | np.ndarray, fmt: str) -> CompressedImage:
    raw = data if isinstance(data, bytes) else np.asarray(data, dtype=np.uint8).tobytes()
    return CompressedImage(header=_header(), format=fmt, data=array.array("B", raw))


def test_image_transport_style_messages_decode() -> None:
    _, bgr_png = cv2.imencode(".png", CHELSEA[..., ::-1].copy())
    for fmt in ("bgr8; png compressed bgr8", "png", ""):
        np.testing.assert_array_equal(compressed_msg_to_rgb(_compressed(bgr_png, fmt)), CHELSEA)
    wide = _wide(_gray(CHELSEA))
    _, png16 = cv2.imencode(".png", wide)
    rgb = compressed_msg_to_rgb(_compressed(png16, "mono16; png compressed mono16"))
    np.testing.assert_array_equal(rgb[..., 0], _gray(CHELSEA))
    depth = _depth_mm(CHELSEA)
    _, depth_png = cv2.imencode(".png", depth)
    with_header = np.concatenate([np.zeros(12, np.uint8), depth_png.reshape(-1)])
    for fmt in ("16UC1; compressedDepth png", "16UC1; compressedDepth"):
        rgb = compressed_msg_to_rgb(_compressed(with_header, fmt))
        np.testing.assert_array_equal(rgb[..., 0], _stretch(depth))


def _image(**fields: object) -> Image:
    """A valid 4x3 rgb8 message with some fields replaced by garbage."""
    values: dict[str, object] = {
        "height": 3,
        "width": 4,
        "encoding": "rgb8",
        "step": 12,
        "data": array.array("B", bytes(36)),
    }
    values.update(fields)
    # check_fields=False: rclpy would otherwise refuse the garbage when
    # ROS_PYTHON_CHECK_FIELDS=1, but drivers and hand-built messages can still carry it.
    return Image(check_fields=False, **values)


_MALFORMED_IMAGES: dict[str, Callable[[], Image]] = {
    "unknown encoding": lambda: _image(encoding="bayer_rggb8"),
    "empty encoding": lambda: _image(encoding=""),
    "encoding not a string": lambda: _image(encoding=None),
    "zero width": lambda: _image(width=0, data=array.array("B")),
    "zero height": lambda: _image(height=0, data=array.array("B")),
    "negative height": lambda: _image(height=-3),
    "height not an int": lambda: _image(height=3.0),
    "step smaller than row": lambda: _image(step=11, data=array.array("B", bytes(33))),
    "step zero": lambda: _image(step=0, data=array.array("B")),
    "wrong step (too large for data)": lambda: _image(step=16),
    "wrong step (too small for data)": lambda: _image(step=12, data=array.array("B", bytes(48))),
    "truncated data": lambda: _image(data=array.array("B", bytes(35))),
    "no data": lambda: _image(data=array.array("B")),
    "huge declared size, tiny data": lambda: _image(height=100_000, width=100_000, step=300_000),
    "huge step, tiny data": lambda: _image(step=2**32 - 1),
    "16-bit row needs more bytes": lambda: _image(encoding="mono16", step=4),
    "float row needs more bytes": lambda: _image(encoding="32FC1", step=12, width=4),
    "odd width yuv": lambda: _image(
        encoding="yuv422", width=3, step=6, data=array.array("B", bytes(18))
    ),
}


@pytest.mark.parametrize("case", sorted(_MALFORMED_IMAGES))
def test_malformed_images_raise_only_image_conversion_error(case: str) -> None:
    msg = _MALFORMED_IMAGES[case]()
    with pytest.raises(ImageConversionError) as info:
        image_msg_to_rgb(msg)
    assert str(info.value)
    with pytest.raises(ImageConversionError):
        image_msg_to_array(msg)


def test_error_messages_name_the_problem() -> None:
    with pytest.raises(ImageConversionError, match="unsupported encoding 'bayer_rggb8'"):
        image_msg_to_rgb(_MALFORMED_IMAGES["unknown encoding"]())
    with pytest.raises(ImageConversionError, match="step 11 is smaller"):
        image_msg_to_rgb(_MALFORMED_IMAGES["step smaller than row"]())
    with pytest.raises(ImageConversionError, match="truncated: 35 bytes"):
        image_msg_to_rgb(_MALFORMED_IMAGES["truncated data"]())
    with pytest.raises(ImageConversionError, match="max_pixels"):
        image_msg_to_rgb(_MALFORMED_IMAGES["huge declared size, tiny data"]())
    with pytest.raises(ImageConversionError, match="max_pixels=100"):
        image_msg_to_rgb(rgb_to_image_msg(CHELSEA), max_pixels=100)
    assert DEFAULT_MAX_PIXELS == 8192 * 8192


def test_byte_buffer_accepts_other_buffers_and_rejects_garbage() -> None:
    # rclpy always stores array.array('B'); other containers can appear in hand-built data.
    assert ic._byte_buffer(b"\x01\x02").tolist() == [1, 2]
    assert ic._byte_buffer(bytearray(b"\x03")).tolist() == [3]
    assert ic._byte_buffer([4, 5]).tolist() == [4, 5]
    strided = memoryview(np.arange(10, dtype=np.uint8)[::2])
    for garbage in (strided, [1, 300], [1.5], array.array("H", [1]), np.zeros(3, np.int16)):
        with pytest.raises(ImageConversionError):
            ic._byte_buffer(garbage)


def _jpeg_bytes() -> np.ndarray:
    _, encoded = cv2.imencode(".jpg", ASTRONAUT[..., ::-1].copy())
    return encoded.reshape(-1)


_MALFORMED_COMPRESSED: dict[str, Callable[[], CompressedImage]] = {
    "empty": lambda: CompressedImage(format="jpeg"),
    "empty with image_transport format": lambda: CompressedImage(
        format="rgb8; jpeg compressed bgr8"
    ),
    "random bytes": lambda: _compressed(
        np.random.default_rng(0).integers(0, 256, 4096).astype(np.uint8), "jpeg"
    ),
    "jpeg header only": lambda: _compressed(_jpeg_bytes()[:20], "jpeg"),
    "jpeg cut in half": lambda: _compressed(_jpeg_bytes()[: _jpeg_bytes().size // 2], "jpeg"),
    "jpeg marker then garbage": lambda: _compressed(
        np.concatenate([_jpeg_bytes()[:2], np.full(500, 0x5A, np.uint8)]), "jpeg"
    ),
    "text": lambda: _compressed(b"this is not an image", "png"),
    "compressedDepth shorter than header": lambda: _compressed(
        b"\x00" * 5, "16UC1; compressedDepth png"
    ),
    "compressedDepth rvl": lambda: _compressed(b"\x00" * 64, "16UC1; compressedDepth rvl"),
    "compressedDepth float": lambda: _compressed(b"\x00" * 64, "32FC1; compressedDepth png"),
    "format not a string": lambda: CompressedImage(
        check_fields=False, format=None, data=array.array("B", b"x")
    ),
}


@pytest.mark.parametrize("case", sorted(_MALFORMED_COMPRESSED))
def test_malformed_compressed_raise_only_image_conversion_error(case: str) -> None:
    with pytest.raises(ImageConversionError) as info:
        compressed_msg_to_rgb(_MALFORMED_COMPRESSED[case]())
    assert str(info.value)


def test_corrupt_png_payload() -> None:
    _, png = cv2.imencode(".png", CHELSEA)
    corrupt = png.reshape(-1).copy()
    corrupt[100:110] ^= 0xFF
    with pytest.raises(ImageConversionError, match="could not decode"):
        compressed_msg_to_rgb(_compressed(corrupt, "png"))


def test_compressed_pixel_limit() -> None:
    msg = rgb_to_compressed_msg(CHELSEA, fmt="png")
    with pytest.raises(ImageConversionError, match="more than the limit of 1000"):
        compressed_msg_to_rgb(msg, max_pixels=1000)


@pytest.mark.parametrize(
    ("image_format", "fmt", "prefix"),
    [
        ("JPEG", "jpeg", b""),
        ("PNG", "png", b""),
        ("PNG", "16UC1; compressedDepth png", bytes(12)),  # behind the depth ConfigHeader
    ],
)
def test_decompression_bombs_are_refused_before_decoding(
    image_format: str, fmt: str, prefix: bytes
) -> None:
    """A few KB claiming 16000 x 16000: the header decides, the decoder never runs."""
    msg = _compressed(prefix + decompression_bomb(image_format), fmt)
    with pytest.raises(ImageConversionError, match=r"header says 16000x16000.*without decoding"):
        compressed_msg_to_rgb(msg)
