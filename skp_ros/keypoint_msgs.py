"""Keypoints as ``sensor_msgs/PointCloud2``: one point per keypoint, float32 fields id, u, v, score.

This is how visual-odometry front ends publish feature tracks: a standard message every ROS
tool can record, replay and inspect, with no custom interface package to build. Layout written
by :func:`keypoints_to_cloud`: ``u`` = x pixel (right), ``v`` = y pixel (down) in the input
image, with the centre of the top-left pixel at (0, 0) as in OpenCV and image_geometry, so
(u, v) project with the camera's CameraInfo directly; the header is
the input image's; height 1, width K, point_step 16, little-endian; ``is_dense`` is True
unless a coordinate or score is NaN/inf. Ids are stored as float32, exact up to 2**24.

Decode our messages (or any cloud with those field names) with::

    from skp_ros.keypoint_msgs import cloud_to_keypoints

    ids, uv, scores = cloud_to_keypoints(msg)  # int32 [K], float32 [K, 2] (u, v), float32 [K]

Decoding looks fields up by name and offset, so field order, extra fields, padding,
``row_step`` and ``is_bigendian`` written by other tools are all honoured.
"""

from __future__ import annotations

import array
from typing import Any, NamedTuple

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import Header

__all__ = [
    "KEYPOINT_FIELDS",
    "KEYPOINT_POINT_STEP",
    "FieldSpec",
    "KeypointCloudError",
    "cloud_to_keypoints",
    "keypoints_to_cloud",
]


class KeypointCloudError(ValueError):
    """A keypoint cloud could not be built or decoded; the message says what was wrong."""


class FieldSpec(NamedTuple):
    """One field of the keypoint point layout (immutable, unlike a PointField message)."""

    name: str
    offset: int
    datatype: int
    count: int


KEYPOINT_FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("id", 0, PointField.FLOAT32, 1),
    FieldSpec("u", 4, PointField.FLOAT32, 1),
    FieldSpec("v", 8, PointField.FLOAT32, 1),
    FieldSpec("score", 12, PointField.FLOAT32, 1),
)
"""The fields written by :func:`keypoints_to_cloud`, in order."""

KEYPOINT_POINT_STEP = 16
"""Bytes per keypoint in clouds written by :func:`keypoints_to_cloud`."""

_MAX_EXACT_ID = 2**24  # largest integer range float32 represents exactly

_STRUCT_DTYPE = np.dtype(
    {
        "names": [field.name for field in KEYPOINT_FIELDS],
        "formats": ["<f4"] * len(KEYPOINT_FIELDS),
        "offsets": [field.offset for field in KEYPOINT_FIELDS],
        "itemsize": KEYPOINT_POINT_STEP,
    }
)

# PointField datatype constant -> numpy element type (byte order added when decoding).
_POINTFIELD_DTYPES: dict[int, str] = {
    PointField.INT8: "i1",
    PointField.UINT8: "u1",
    PointField.INT16: "i2",
    PointField.UINT16: "u2",
    PointField.INT32: "i4",
    PointField.UINT32: "u4",
    PointField.FLOAT32: "f4",
    PointField.FLOAT64: "f8",
}


def _copy_header(header: Header | None) -> Header:
    """Copy stamp and frame_id, so later edits of the caller's header never alter our message."""
    if header is None:
        return Header()
    stamp = Time(sec=header.stamp.sec, nanosec=header.stamp.nanosec)
    return Header(stamp=stamp, frame_id=header.frame_id)


def _numeric_array(values: Any, name: str) -> np.ndarray:
    """Turn input into a real-valued numpy array, or say which argument was wrong."""
    try:
        result = np.asarray(values)
    except (ValueError, TypeError) as exc:
        raise KeypointCloudError(f"{name} is not an array: {exc}") from exc
    if result.dtype.kind not in "biuf":
        raise KeypointCloudError(f"{name} must be numeric, got dtype {result.dtype}")
    return result


def keypoints_to_cloud(
    header: Header | None, ids: np.ndarray, uv: np.ndarray, scores: np.ndarray
) -> PointCloud2:
    """Pack K keypoints into a PointCloud2 (layout in the module docstring).

    ``ids`` are integer keypoint ids in [0, 2**24] (int dtype), ``uv`` is [K, 2] pixel
    coordinates (x right, y down) and ``scores`` is [K]. The header (stamp and frame_id of the
    input image) is copied. Raises :class:`KeypointCloudError` on inconsistent input.
    """
    ids_array = _numeric_array(ids, "ids")
    uv_array = _numeric_array(uv, "uv")
    scores_array = _numeric_array(scores, "scores")
    if ids_array.ndim != 1 or ids_array.dtype.kind not in "iu":
        raise KeypointCloudError(
            f"ids must be a 1-D integer array, got shape {ids_array.shape} dtype {ids_array.dtype}"
        )
    count = ids_array.shape[0]
    if uv_array.shape != (count, 2):
        raise KeypointCloudError(f"uv must have shape ({count}, 2), got {uv_array.shape}")
    if scores_array.shape != (count,):
        raise KeypointCloudError(f"scores must have shape ({count},), got {scores_array.shape}")
    if count and (ids_array.min() < 0 or ids_array.max() > _MAX_EXACT_ID):
        raise KeypointCloudError(f"ids must lie in [0, {_MAX_EXACT_ID}] to be exact in float32")
    points = np.zeros(count, dtype=_STRUCT_DTYPE)
    points["id"] = ids_array
    points["u"] = uv_array[:, 0]
    points["v"] = uv_array[:, 1]
    points["score"] = scores_array
    data = array.array("B")
    data.frombytes(points.view(np.uint8))
    finite = np.isfinite(uv_array).all() and np.isfinite(scores_array).all()
    return PointCloud2(
        header=_copy_header(header),
        height=1,
        width=count,
        fields=[
            PointField(name=f.name, offset=f.offset, datatype=f.datatype, count=f.count)
            for f in KEYPOINT_FIELDS
        ],
        is_bigendian=False,
        point_step=KEYPOINT_POINT_STEP,
        row_step=KEYPOINT_POINT_STEP * count,
        data=data,
        is_dense=bool(finite),
    )


def _cloud_buffer(data: Any) -> np.ndarray:
    """View the cloud's uint8[] data (array.array, bytes, ...) as a flat uint8 array."""
    if isinstance(data, array.array) and data.typecode != "B":
        raise KeypointCloudError(f"data is an array.array of typecode {data.typecode!r}")
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8:
            raise KeypointCloudError(f"data is a numpy array of {data.dtype}, expected uint8")
        return data.reshape(-1)
    if isinstance(data, (bytes, bytearray, memoryview, array.array)):
        try:
            return np.frombuffer(data, dtype=np.uint8)
        except (ValueError, TypeError, BufferError) as exc:
            raise KeypointCloudError(f"data is not a contiguous byte buffer: {exc}") from exc
    try:
        values = np.asarray(data)
    except (ValueError, TypeError) as exc:
        raise KeypointCloudError(f"data is not a byte sequence: {exc}") from exc
    if values.size == 0:
        return np.zeros(0, dtype=np.uint8)
    if values.ndim != 1 or values.dtype.kind not in "iu" or values.min() < 0 or values.max() > 255:
        raise KeypointCloudError("data is not a flat sequence of bytes")
    return values.astype(np.uint8)


def _find_fields(msg: PointCloud2, point_step: int) -> dict[str, tuple[int, np.dtype]]:
    """Locate id/u/v/score by name and check each lies inside one point."""
    by_name: dict[str, Any] = {}
    for field in msg.fields:
        if field.name in by_name:
            raise KeypointCloudError(f"field {field.name!r} appears more than once")
        by_name[field.name] = field
    wanted = [spec.name for spec in KEYPOINT_FIELDS]
    missing = [name for name in wanted if name not in by_name]
    if missing:
        raise KeypointCloudError(
            f"cloud lacks keypoint field(s) {missing}; it has {sorted(by_name)} (expected {wanted})"
        )
    byte_order = ">" if msg.is_bigendian else "<"
    located: dict[str, tuple[int, np.dtype]] = {}
    for name in wanted:
        field = by_name[name]
        base = _POINTFIELD_DTYPES.get(field.datatype)
        if base is None:
            raise KeypointCloudError(f"field {name!r} has unknown datatype {field.datatype}")
        # count 0 is a common omission in hand-built clouds and means a single value.
        if field.count not in (0, 1):
            raise KeypointCloudError(f"field {name!r} has count {field.count}, expected 1")
        dtype = np.dtype(byte_order + base)
        if field.offset + dtype.itemsize > point_step:
            raise KeypointCloudError(
                f"field {name!r} at offset {field.offset} ({dtype.itemsize} bytes) does not fit "
                f"in point_step {point_step}"
            )
        located[name] = (field.offset, dtype)
    return located


def cloud_to_keypoints(msg: PointCloud2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode a keypoint cloud into (ids int32 [K], uv float32 [K, 2], scores float32 [K]).

    Fields are found by name and offset (any order, any numeric datatype, extra fields
    ignored); ``point_step``, ``row_step``, ``height`` > 1 (row-major) and ``is_bigendian`` are
    honoured. Raises :class:`KeypointCloudError` when fields are missing or sizes disagree.
    """
    try:
        return _decode_cloud(msg)
    except KeypointCloudError:
        raise
    except (ValueError, TypeError, OverflowError, AttributeError) as exc:
        raise KeypointCloudError(f"malformed keypoint cloud: {exc}") from exc


def _decode_cloud(msg: PointCloud2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The body of :func:`cloud_to_keypoints`; may raise numpy errors on garbage fields."""
    height, width = int(msg.height), int(msg.width)
    point_step, row_step = int(msg.point_step), int(msg.row_step)
    located = _find_fields(msg, point_step)
    buffer = _cloud_buffer(msg.data)
    if row_step < width * point_step:
        raise KeypointCloudError(
            f"row_step {row_step} is smaller than width * point_step = {width} * {point_step}"
        )
    if buffer.size != row_step * height:
        raise KeypointCloudError(
            f"data has {buffer.size} bytes, but row_step * height = {row_step} * {height} = "
            f"{row_step * height}"
        )
    count = height * width
    if count == 0:
        return (
            np.zeros(0, dtype=np.int32),
            np.zeros((0, 2), dtype=np.float32),
            np.zeros(0, dtype=np.float32),
        )
    columns: dict[str, np.ndarray] = {}
    for name, (offset, dtype) in located.items():
        grid = np.ndarray(
            shape=(height, width),
            dtype=dtype,
            buffer=buffer,
            offset=offset,
            strides=(row_step, point_step),
        )
        columns[name] = grid.reshape(-1)
    raw_ids = columns["id"].astype(np.float64)
    if not np.isfinite(raw_ids).all() or not np.array_equal(raw_ids, np.rint(raw_ids)):
        raise KeypointCloudError("field 'id' holds non-integer values")
    if raw_ids.min() < np.iinfo(np.int32).min or raw_ids.max() > np.iinfo(np.int32).max:
        raise KeypointCloudError("field 'id' holds values outside the int32 range")
    ids = raw_ids.astype(np.int32)
    uv = np.stack([columns["u"], columns["v"]], axis=1).astype(np.float32)
    scores = columns["score"].astype(np.float32)
    return ids, uv, scores
