"""Keypoints as ``sensor_msgs/PointCloud2``: one point per keypoint and instance.

Fields, in this order (little-endian, point_step 32)::

    x, y, z    float32  offsets 0, 4, 8    position in the camera's optical frame (metres)
    u, v       float32  offsets 12, 16     pixel of the input image
    id         uint32   offset 20          keypoint id (index into ~/keypoint_info)
    score      float32  offset 24          peak attention probability in [0, 1]
    instance   uint32   offset 28          which instance of the object (0 with one subject)

``x, y, z`` come first so RViz, PCL and tf tools read the cloud as they read any other: with
the camera's CameraInfo they are the undistorted ray through (u, v) at z = 1 (a direction,
not a distance); with an aligned depth image the metric 3-D point; with neither, or where
depth is missing, NaN (RViz skips such points, and ``is_dense`` is then False). ``u`` = x pixel
(right), ``v`` = y pixel (down), with the centre of the top-left pixel at (0, 0) as in OpenCV
and image_geometry. The header is the input image's (stamp and frame_id, so the points live
in the camera's optical frame). ``instance`` numbers the instances left to right when the
bundle (or the node's ``num_subjects``) looks for several per image; each instance carries its
own keypoints with the same ids.

Decode our messages (or any cloud with those field names) with::

    from skp_ros.keypoint_msgs import cloud_to_instances, cloud_to_keypoints, cloud_to_points

    ids, uv, scores = cloud_to_keypoints(msg)  # int32 [K], float32 [K, 2] (u, v), float32 [K]
    xyz = cloud_to_points(msg)  # float32 [K, 3]; NaN where there is no position
    instances = cloud_to_instances(msg)  # int32 [K]; zeros for clouds without the field

Decoding looks fields up by name and offset, so field order, extra fields, padding,
``row_step``, ``is_bigendian`` and the id/u/v/score clouds of skp before 0.3 (id as float32,
no x, y, z) are all honoured.
"""

from __future__ import annotations

import array
from typing import Any, NamedTuple

import numpy as np
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import Header

from skp_ros.headers import copy_header

__all__ = [
    "KEYPOINT_FIELDS",
    "KEYPOINT_POINT_STEP",
    "FieldSpec",
    "KeypointCloudError",
    "cloud_to_instances",
    "cloud_to_keypoints",
    "cloud_to_points",
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
    FieldSpec("x", 0, PointField.FLOAT32, 1),
    FieldSpec("y", 4, PointField.FLOAT32, 1),
    FieldSpec("z", 8, PointField.FLOAT32, 1),
    FieldSpec("u", 12, PointField.FLOAT32, 1),
    FieldSpec("v", 16, PointField.FLOAT32, 1),
    FieldSpec("id", 20, PointField.UINT32, 1),
    FieldSpec("score", 24, PointField.FLOAT32, 1),
    FieldSpec("instance", 28, PointField.UINT32, 1),
)
"""The fields written by :func:`keypoints_to_cloud`, in order."""

KEYPOINT_POINT_STEP = 32
"""Bytes per keypoint in clouds written by :func:`keypoints_to_cloud`."""

_MAX_ID = np.iinfo(np.uint32).max

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


def _numeric_array(values: Any, name: str) -> np.ndarray:
    """Turn input into a real-valued numpy array, or say which argument was wrong."""
    try:
        result = np.asarray(values)
    except (ValueError, TypeError) as exc:
        raise KeypointCloudError(f"{name} is not an array: {exc}") from exc
    if result.dtype.kind not in "biuf":
        raise KeypointCloudError(f"{name} must be numeric, got dtype {result.dtype}")
    return result


def _integer_ids(values: Any, name: str, count: int | None) -> np.ndarray:
    """A 1-D integer array in the uint32 range (``count`` long when given), or an error."""
    result = _numeric_array(values, name)
    if result.ndim != 1 or result.dtype.kind not in "iu":
        raise KeypointCloudError(
            f"{name} must be a 1-D integer array, got shape {result.shape} dtype {result.dtype}"
        )
    if count is not None and result.shape[0] != count:
        raise KeypointCloudError(f"{name} must hold {count} values, got {result.shape[0]}")
    if result.size and (result.min() < 0 or result.max() > _MAX_ID):
        raise KeypointCloudError(f"{name} must lie in the uint32 range [0, {_MAX_ID}]")
    return result


def keypoints_to_cloud(
    header: Header | None,
    ids: np.ndarray,
    uv: np.ndarray,
    scores: np.ndarray,
    instances: np.ndarray | None = None,
    xyz: np.ndarray | None = None,
) -> PointCloud2:
    """Pack K keypoints into a PointCloud2 (layout in the module docstring).

    ``ids`` are integer keypoint ids (uint32 range), ``uv`` is [K, 2] pixel coordinates (x
    right, y down), ``scores`` is [K], ``instances`` [K] the instance of each point (None: all
    0) and ``xyz`` [K, 3] positions in the camera's optical frame (None: all NaN, no
    geometry known). The header (stamp and frame_id of the input image) is copied. Raises
    :class:`KeypointCloudError` on inconsistent input.
    """
    ids_array = _integer_ids(ids, "ids", None)
    count = ids_array.shape[0]
    uv_array = _numeric_array(uv, "uv")
    scores_array = _numeric_array(scores, "scores")
    if uv_array.shape != (count, 2):
        raise KeypointCloudError(f"uv must have shape ({count}, 2), got {uv_array.shape}")
    if scores_array.shape != (count,):
        raise KeypointCloudError(f"scores must have shape ({count},), got {scores_array.shape}")
    instance_array = np.zeros(count, dtype=np.int64)
    if instances is not None:
        instance_array = _integer_ids(instances, "instances", count)
    xyz_array = np.full((count, 3), np.nan, dtype=np.float32)
    if xyz is not None:
        xyz_array = _numeric_array(xyz, "xyz")
        if xyz_array.shape != (count, 3):
            raise KeypointCloudError(f"xyz must have shape ({count}, 3), got {xyz_array.shape}")
    points = np.zeros(count, dtype=_STRUCT_DTYPE)
    points["x"], points["y"], points["z"] = xyz_array[:, 0], xyz_array[:, 1], xyz_array[:, 2]
    points["u"] = uv_array[:, 0]
    points["v"] = uv_array[:, 1]
    points["id"] = ids_array
    points["score"] = scores_array
    points["instance"] = instance_array
    data = array.array("B")
    data.frombytes(points.view(np.uint8))
    finite = all(np.isfinite(a).all() for a in (xyz_array, uv_array, scores_array))
    return PointCloud2(
        header=copy_header(header),
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


_OPTIONAL_FIELDS = frozenset({"x", "y", "z", "instance"})
"""Fields a decoded cloud may lack (clouds of older skp versions and of other tools)."""


def _find_fields(msg: PointCloud2, point_step: int) -> dict[str, tuple[int, np.dtype]]:
    """Locate id/u/v/score (and x/y/z/instance, if present) by name, each inside one point."""
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


def cloud_to_points(msg: PointCloud2) -> np.ndarray:
    """The x, y, z of every point, float32 [K, 3], in the order of :func:`cloud_to_keypoints`.

    NaN where the node knew no position, and everywhere for clouds without x, y, z.
    """
    return _decoded_columns(msg)["xyz"]


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
    if all(axis in columns for axis in "xyz"):
        xyz = np.stack([columns[axis] for axis in "xyz"], axis=1).astype(np.float32)
    else:
        xyz = np.full((count, 3), np.nan, dtype=np.float32)
    return {
        "xyz": xyz.reshape(-1, 3),
        "id": _integer_column(columns["id"], "id"),
        "uv": np.stack([columns["u"], columns["v"]], axis=1).astype(np.float32).reshape(-1, 2),
        "score": columns["score"].astype(np.float32),
        "instance": np.zeros(count, dtype=np.int32)
        if instances is None
        else _integer_column(instances, "instance"),
    }
