"""Keypoints as ``sensor_msgs/PointCloud2``: one point per keypoint and instance.

Fields: float32 id, u, v, score, then uint32 instance.

This is how visual-odometry front ends publish feature tracks: a standard message every ROS
tool can record, replay and inspect, with no custom interface package to build. Layout written
by :func:`keypoints_to_cloud`: ``u`` = x pixel (right), ``v`` = y pixel (down) in the input
image, with the centre of the top-left pixel at (0, 0) as in OpenCV and image_geometry, so
(u, v) project with the camera's CameraInfo directly; the header is
the input image's; height 1, width = the number of points, point_step 20, little-endian;
``is_dense`` is True unless a coordinate or score is NaN/inf. Ids are stored as float32, exact
up to 2**24. ``instance`` numbers the instances of the object when the bundle (or the node's
``num_subjects``) looks for several per image, left to right; each instance carries its own
keypoints, with the same ids (0 for every point with one subject).

Decode our messages (or any cloud with those field names) with::

    from skp_ros.keypoint_msgs import cloud_to_instances, cloud_to_keypoints

    ids, uv, scores = cloud_to_keypoints(msg)  # int32 [K], float32 [K, 2] (u, v), float32 [K]
    instances = cloud_to_instances(msg)  # int32 [K]; zeros for clouds without the field

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
    "cloud_to_instances",
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
    FieldSpec("instance", 16, PointField.UINT32, 1),
)
"""The fields written by :func:`keypoints_to_cloud`, in order."""

KEYPOINT_POINT_STEP = 20
"""Bytes per keypoint in clouds written by :func:`keypoints_to_cloud`."""

_MAX_EXACT_ID = 2**24  # largest integer range float32 represents exactly

_STRUCT_DTYPE = np.dtype(
    {
        "names": [field.name for field in KEYPOINT_FIELDS],
        "formats": ["<u4" if f.datatype == PointField.UINT32 else "<f4" for f in KEYPOINT_FIELDS],
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
    header: Header | None,
    ids: np.ndarray,
    uv: np.ndarray,
    scores: np.ndarray,
    instances: np.ndarray | None = None,
) -> PointCloud2:
    """Pack K keypoints into a PointCloud2 (layout in the module docstring).

    ``ids`` are integer keypoint ids in [0, 2**24] (int dtype), ``uv`` is [K, 2] pixel
    coordinates (x right, y down), ``scores`` is [K] and ``instances`` [K] the instance of
    each point (integers >= 0; None: all 0). The header (stamp and frame_id of the input
    image) is copied. Raises :class:`KeypointCloudError` on inconsistent input.
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
    instance_array = np.zeros(count, dtype=np.int64)
    if instances is not None:
        instance_array = _numeric_array(instances, "instances")
        if instance_array.shape != (count,) or instance_array.dtype.kind not in "iu":
            raise KeypointCloudError(
                f"instances must be {count} integers, got shape {instance_array.shape} "
                f"dtype {instance_array.dtype}"
            )
        if count and (instance_array.min() < 0 or instance_array.max() > np.iinfo(np.uint32).max):
            raise KeypointCloudError("instances must lie in the uint32 range")
    points = np.zeros(count, dtype=_STRUCT_DTYPE)
    points["id"] = ids_array
    points["u"] = uv_array[:, 0]
    points["v"] = uv_array[:, 1]
    points["score"] = scores_array
    points["instance"] = instance_array
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


_OPTIONAL_FIELDS = frozenset({"instance"})
"""Fields a decoded cloud may lack (clouds of older skp versions and of other tools)."""


def _find_fields(msg: PointCloud2, point_step: int) -> dict[str, tuple[int, np.dtype]]:
    """Locate id/u/v/score (and instance, if present) by name; each must lie inside one point."""
    by_name: dict[str, Any] = {}
    for field in msg.fields:
        if field.name in by_name:
            raise KeypointCloudError(f"field {field.name!r} appears more than once")
        by_name[field.name] = field
    wanted = [spec.name for spec in KEYPOINT_FIELDS]
    missing = [name for name in wanted if name not in by_name and name not in _OPTIONAL_FIELDS]
    if missing:
        raise KeypointCloudError(
            f"cloud lacks keypoint field(s) {missing}; it has {sorted(by_name)} (expected {wanted})"
        )
    wanted = [name for name in wanted if name in by_name]
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
    columns = _decoded_columns(msg)
    return columns["id"], columns["uv"], columns["score"]


def cloud_to_instances(msg: PointCloud2) -> np.ndarray:
    """The instance of every point, int32 [K], in the order of :func:`cloud_to_keypoints`.

    A cloud without an ``instance`` field (one subject) gives zeros.
    """
    return _decoded_columns(msg)["instance"]


def _decoded_columns(msg: PointCloud2) -> dict[str, np.ndarray]:
    try:
        return _decode_cloud(msg)
    except KeypointCloudError:
        raise
    except (ValueError, TypeError, OverflowError, AttributeError) as exc:
        raise KeypointCloudError(f"malformed keypoint cloud: {exc}") from exc


def _integer_column(values: np.ndarray, name: str) -> np.ndarray:
    """A float or integer column of whole numbers as int32, or a one-line error."""
    raw = values.astype(np.float64)
    if not np.isfinite(raw).all() or not np.array_equal(raw, np.rint(raw)):
        raise KeypointCloudError(f"field {name!r} holds non-integer values")
    if raw.size and (raw.min() < np.iinfo(np.int32).min or raw.max() > np.iinfo(np.int32).max):
        raise KeypointCloudError(f"field {name!r} holds values outside the int32 range")
    return raw.astype(np.int32)


def _decode_cloud(msg: PointCloud2) -> dict[str, np.ndarray]:
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
    columns: dict[str, np.ndarray] = {}
    for name, (offset, dtype) in located.items():
        if count == 0:
            columns[name] = np.zeros(0, dtype=dtype)
            continue
        grid = np.ndarray(
            shape=(height, width),
            dtype=dtype,
            buffer=buffer,
            offset=offset,
            strides=(row_step, point_step),
        )
        columns[name] = grid.reshape(-1)
    instances = columns.get("instance")
    return {
        "id": _integer_column(columns["id"], "id"),
        "uv": np.stack([columns["u"], columns["v"]], axis=1).astype(np.float32).reshape(-1, 2),
        "score": columns["score"].astype(np.float32),
        "instance": np.zeros(count, dtype=np.int32)
        if instances is None
        else _integer_column(instances, "instance"),
    }
