"""Tests for skp_ros.keypoint_msgs with real PointCloud2 messages; no DDS is used.

Keypoints come from a real photo (OpenCV corners on skimage's astronaut) so coordinates are
realistic, and foreign clouds are packed by hand with ``struct`` so the decoder is checked
against an independent layout.
"""

from __future__ import annotations

import array
import struct

import cv2
import numpy as np
import pytest
import skimage.data
from builtin_interfaces.msg import Time
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import Header

from skp_ros.keypoint_msgs import (
    KEYPOINT_FIELDS,
    KEYPOINT_POINT_STEP,
    KeypointCloudError,
    cloud_to_instances,
    cloud_to_keypoints,
    cloud_to_points,
    keypoints_to_cloud,
)


def _header() -> Header:
    return Header(stamp=Time(sec=1_712_345_678, nanosec=987_654_321), frame_id="camera_optical")


def _photo_keypoints() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Up to 40 corners of the astronaut photo: (ids, uv in pixels, scores in (0, 1])."""
    gray = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2GRAY)
    corners = cv2.goodFeaturesToTrack(gray, maxCorners=40, qualityLevel=0.01, minDistance=8)
    uv = corners.reshape(-1, 2).astype(np.float64) + 0.5  # pixel-centre convention
    count = uv.shape[0]
    ids = np.arange(count, dtype=np.int64) * 3 + 1
    scores = np.linspace(1.0, 0.1, count)
    return ids, uv, scores


def test_round_trip_preserves_values_header_and_layout() -> None:
    ids, uv, scores = _photo_keypoints()
    header = _header()
    xyz = np.column_stack([uv / 100.0, np.full(len(uv), 2.0)])
    cloud = keypoints_to_cloud(header, ids, uv, scores, xyz=xyz)
    assert (cloud.height, cloud.width) == (1, ids.size)
    assert cloud.point_step == KEYPOINT_POINT_STEP == 32
    assert cloud.row_step == 32 * ids.size
    assert cloud.is_dense and not cloud.is_bigendian
    # x, y, z first (RViz, PCL and tf read them), then pixels, a uint32 id, score, instance.
    assert [(f.name, f.offset, f.datatype, f.count) for f in cloud.fields] == [
        ("x", 0, PointField.FLOAT32, 1),
        ("y", 4, PointField.FLOAT32, 1),
        ("z", 8, PointField.FLOAT32, 1),
        ("u", 12, PointField.FLOAT32, 1),
        ("v", 16, PointField.FLOAT32, 1),
        ("id", 20, PointField.UINT32, 1),
        ("score", 24, PointField.FLOAT32, 1),
        ("instance", 28, PointField.UINT32, 1),
    ]
    assert [tuple(spec) for spec in KEYPOINT_FIELDS] == [
        (f.name, f.offset, f.datatype, f.count) for f in cloud.fields
    ]
    assert cloud.header.frame_id == "camera_optical"
    assert (cloud.header.stamp.sec, cloud.header.stamp.nanosec) == (1_712_345_678, 987_654_321)
    header.frame_id = "edited later"
    assert cloud.header.frame_id == "camera_optical"

    out_ids, out_uv, out_scores = cloud_to_keypoints(cloud)
    assert (out_ids.dtype, out_uv.dtype, out_scores.dtype) == (np.int32, np.float32, np.float32)
    np.testing.assert_array_equal(out_ids, ids)
    np.testing.assert_array_equal(out_uv, uv.astype(np.float32))
    np.testing.assert_array_equal(out_scores, scores.astype(np.float32))
    np.testing.assert_array_equal(cloud_to_points(cloud), xyz.astype(np.float32))
    # Without positions x, y, z are NaN (RViz skips them) and the cloud is not dense.
    flat = keypoints_to_cloud(header, ids, uv, scores)
    assert np.isnan(cloud_to_points(flat)).all() and not flat.is_dense


def test_bytes_are_little_endian_x_y_z_u_v_id_score_instance() -> None:
    cloud = keypoints_to_cloud(
        _header(), np.array([7, 9]), [[10.5, 20.25], [1.0, 2.0]], [0.5, 1], np.array([0, 3]),
        xyz=[[0.5, -0.25, 2.0], [1.0, 2.0, 3.0]],
    )  # fmt: skip
    first = struct.unpack("<5fIfI", bytes(cloud.data[:32]))
    second = struct.unpack("<5fIfI", bytes(cloud.data[32:64]))
    assert first == (0.5, -0.25, 2.0, 10.5, 20.25, 7, 0.5, 0)
    assert second == (1.0, 2.0, 3.0, 1.0, 2.0, 9, 1.0, 3)
    assert len(cloud.data) == 64


def _legacy_cloud(points: list[tuple[float, float, float, float]]) -> PointCloud2:
    """A cloud of skp before x, y, z: float32 id, u, v, score (16 bytes a point)."""
    fields = [
        PointField(name=name, offset=4 * i, datatype=PointField.FLOAT32, count=1)
        for i, name in enumerate(("id", "u", "v", "score"))
    ]
    data = b"".join(struct.pack("<4f", *point) for point in points)
    return PointCloud2(
        height=1, width=len(points), fields=fields, point_step=16, row_step=16 * len(points),
        data=array.array("B", data), is_dense=True,
    )  # fmt: skip


def test_clouds_of_earlier_skp_versions_still_decode() -> None:
    cloud = _legacy_cloud([(3.0, 10.5, 20.0, 0.5), (4.0, 1.0, 2.0, 0.25)])
    ids, uv, scores = cloud_to_keypoints(cloud)
    assert ids.tolist() == [3, 4] and uv.tolist() == [[10.5, 20.0], [1.0, 2.0]]
    assert scores.tolist() == [0.5, 0.25] and cloud_to_instances(cloud).tolist() == [0, 0]
    assert np.isnan(cloud_to_points(cloud)).all()


def test_instances_round_trip_and_default_to_zero() -> None:
    ids = np.array([0, 1, 0, 1])
    uv = [[1.0, 2.0], [3.0, 4.0], [101.0, 2.0], [103.0, 4.0]]
    cloud = keypoints_to_cloud(_header(), ids, uv, [0.9, 0.8, 0.7, 0.6], np.array([0, 0, 1, 1]))
    assert cloud_to_instances(cloud).tolist() == [0, 0, 1, 1]
    assert cloud_to_instances(cloud).dtype == np.int32
    assert struct.unpack("<I", bytes(cloud.data[92:96])) == (1,)
    assert cloud_to_keypoints(cloud)[0].tolist() == [0, 1, 0, 1]
    # A cloud without the field (older skp, other tools) is one instance.
    assert cloud_to_instances(_foreign_cloud(_FOREIGN_POINTS)).tolist() == [0] * len(
        _FOREIGN_POINTS
    )
    with pytest.raises(KeypointCloudError, match="instances must be a 1-D integer array"):
        keypoints_to_cloud(None, ids, uv, [0.9, 0.8, 0.7, 0.6], np.array([0.5, 0, 1, 1]))
    with pytest.raises(KeypointCloudError, match="uint32"):
        keypoints_to_cloud(None, ids, uv, [0.9, 0.8, 0.7, 0.6], np.array([-1, 0, 1, 1]))


def test_empty_and_non_finite_keypoints() -> None:
    empty = keypoints_to_cloud(None, np.zeros(0, np.int32), np.zeros((0, 2)), np.zeros(0))
    assert (empty.width, empty.row_step, len(empty.data)) == (0, 0, 0)
    ids, uv, scores = cloud_to_keypoints(empty)
    assert ids.shape == (0,) and uv.shape == (0, 2) and scores.shape == (0,)
    lost = keypoints_to_cloud(None, np.array([0, 1]), [[np.nan, np.nan], [3.0, 4.0]], [0.0, 0.9])
    assert lost.is_dense is False
    _, uv_back, _ = cloud_to_keypoints(lost)
    assert np.isnan(uv_back[0]).all() and uv_back[1].tolist() == [3.0, 4.0]


def test_cloud_survives_ros_serialization() -> None:
    ids, uv, scores = _photo_keypoints()
    cloud = keypoints_to_cloud(_header(), ids, uv, scores)
    back = deserialize_message(serialize_message(cloud), PointCloud2)
    assert back.header.frame_id == "camera_optical"
    out_ids, out_uv, out_scores = cloud_to_keypoints(back)
    np.testing.assert_array_equal(out_ids, ids)
    np.testing.assert_array_equal(out_uv, uv.astype(np.float32))
    np.testing.assert_array_equal(out_scores, scores.astype(np.float32))


def _foreign_cloud(points: list[tuple[int, float, float, float]], **changes: object) -> PointCloud2:
    """A cloud as another tool might write it: big-endian, reordered, extra field, padding.

    Point layout (28 bytes): score float64 @0, x float32 @8 (extra), v float32 @12,
    id uint32 @16, u float32 @20, 4 unused bytes; 2 rows with 6 padding bytes per row.
    """
    fields = [
        PointField(name="score", offset=0, datatype=PointField.FLOAT64, count=1),
        PointField(name="x", offset=8, datatype=PointField.FLOAT32, count=1),
        PointField(name="v", offset=12, datatype=PointField.FLOAT32, count=1),
        PointField(name="id", offset=16, datatype=PointField.UINT32, count=1),
        PointField(name="u", offset=20, datatype=PointField.FLOAT32, count=1),
    ]
    width = len(points) // 2
    point_step, row_step = 28, 28 * width + 6
    data = b""
    for row in range(2):
        for kp_id, u, v, score in points[row * width : (row + 1) * width]:
            data += struct.pack(">dffIf4x", score, -1.0, v, kp_id, u)
        data += b"\xee" * 6
    values: dict[str, object] = {
        "header": _header(),
        "height": 2,
        "width": width,
        "fields": fields,
        "is_bigendian": True,
        "point_step": point_step,
        "row_step": row_step,
        "data": array.array("B", data),
        "is_dense": True,
    }
    values.update(changes)
    return PointCloud2(check_fields=False, **values)  # some changes are deliberately invalid


_FOREIGN_POINTS = [
    (5, 10.5, 20.5, 0.25),
    (6, 30.0, 40.0, 0.5),
    (7, 1.5, 2.5, 0.75),
    (8, 4.0, 8.0, 1),
]


def test_decodes_fields_by_name_in_any_order_and_byte_order() -> None:
    ids, uv, scores = cloud_to_keypoints(_foreign_cloud(_FOREIGN_POINTS))
    assert ids.tolist() == [5, 6, 7, 8]
    assert uv.tolist() == [[10.5, 20.5], [30.0, 40.0], [1.5, 2.5], [4.0, 8.0]]
    assert scores.tolist() == [0.25, 0.5, 0.75, 1.0]


def test_count_zero_is_read_as_one() -> None:
    cloud = keypoints_to_cloud(None, np.array([3]), [[1.0, 2.0]], [0.5])
    for field in cloud.fields:
        field.count = 0
    assert cloud_to_keypoints(cloud)[0].tolist() == [3]


def _without(name: str) -> PointCloud2:
    cloud = _foreign_cloud(_FOREIGN_POINTS)
    cloud.fields = [f for f in cloud.fields if f.name != name]
    return cloud


def _field_changed(name: str, **changes: object) -> PointCloud2:
    cloud = _foreign_cloud(_FOREIGN_POINTS)
    for field in cloud.fields:
        if field.name == name:
            for key, value in changes.items():
                setattr(field, key, value)
    return cloud


@pytest.mark.parametrize(
    ("cloud", "message"),
    [
        (_without("score"), r"lacks keypoint field\(s\) \['score'\]"),
        (_without("u"), r"\['u'\]"),
        (_foreign_cloud(_FOREIGN_POINTS, fields=[]), r"\['u', 'v', 'id', 'score'\]"),
        (_field_changed("u", offset=26), "does not fit in point_step 28"),
        (_field_changed("v", datatype=42), "unknown datatype 42"),
        (_field_changed("id", count=3), "count 3"),
        (_foreign_cloud(_FOREIGN_POINTS, row_step=40), "row_step 40 is smaller"),
        (_foreign_cloud(_FOREIGN_POINTS, height=3), "data has 124 bytes"),
        (_foreign_cloud(_FOREIGN_POINTS, data=array.array("B", bytes(100))), "data has 100"),
        (_foreign_cloud(_FOREIGN_POINTS, point_step=-1), "malformed|does not fit|smaller"),
    ],
)
def test_bad_clouds_raise_a_clear_value_error(cloud: PointCloud2, message: str) -> None:
    with pytest.raises(KeypointCloudError, match=message):
        cloud_to_keypoints(cloud)
    assert issubclass(KeypointCloudError, ValueError)


def test_duplicate_field_and_non_integer_ids_are_rejected() -> None:
    cloud = keypoints_to_cloud(None, np.array([1]), [[1.0, 2.0]], [0.5])
    cloud.fields = [*cloud.fields, PointField(name="u", offset=0, datatype=7, count=1)]
    with pytest.raises(KeypointCloudError, match="more than once"):
        cloud_to_keypoints(cloud)
    fractional = _legacy_cloud([(1.5, 1.0, 2.0, 0.5)])
    with pytest.raises(KeypointCloudError, match="non-integer"):
        cloud_to_keypoints(fractional)


@pytest.mark.parametrize(
    ("ids", "uv", "scores", "message"),
    [
        (np.array([0, 1]), np.zeros((3, 2)), np.zeros(2), r"uv must have shape \(2, 2\)"),
        (np.array([0, 1]), np.zeros((2, 2)), np.zeros(3), r"scores must have shape \(2,\)"),
        (np.array([0.0, 1.0]), np.zeros((2, 2)), np.zeros(2), "integer"),
        (np.array([[0, 1]]), np.zeros((2, 2)), np.zeros(2), "1-D"),
        (np.array([-1]), np.zeros((1, 2)), np.zeros(1), "ids must lie in the uint32 range"),
        (np.array([2**32]), np.zeros((1, 2)), np.zeros(1), "uint32"),
        (np.array([0]), np.array([["a", "b"]]), np.zeros(1), "numeric"),
    ],
)
def test_bad_keypoint_arrays_are_rejected(
    ids: np.ndarray, uv: np.ndarray, scores: np.ndarray, message: str
) -> None:
    with pytest.raises(KeypointCloudError, match=message):
        keypoints_to_cloud(_header(), ids, uv, scores)
