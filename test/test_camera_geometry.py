"""Rays, depth look-up, regions of interest, markers and diagnostics levels, computed by hand.

The node tests check these over DDS; here every formula meets a case whose answer is known:
OpenCV's own projection inverted for each distortion model, depth windows with holes and
edges, ROI crops clamped at the border, and diagnostic_updater's level rules.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from sensor_msgs.msg import CameraInfo, RegionOfInterest
from std_msgs.msg import Header
from visualization_msgs.msg import Marker

from skp_ros.camera_geometry import (
    CameraGeometryError,
    CameraModel,
    depth_at,
    depth_image_metres,
    keypoint_positions,
)
from skp_ros.diagnostics import FrameStats, Health, build_status
from skp_ros.image_conversion import array_to_image_msg
from skp_ros.markers import keypoint_markers
from skp_ros.roi import box_from_msg, crop_for, static_box

K = [500.0, 0.0, 320.0, 0.0, 510.0, 240.0, 0.0, 0.0, 1.0]
POINTS = np.array([[0.3, -0.2, 2.0], [-0.5, 0.4, 3.0], [0.0, 0.0, 1.5], [0.9, 0.6, 2.5]])


def _info(model: str, d: list[float], width: int = 640, height: int = 480) -> CameraInfo:
    return CameraInfo(width=width, height=height, distortion_model=model, d=d, k=K)


@pytest.mark.parametrize(
    ("model", "d"),
    [
        ("plumb_bob", [-0.25, 0.08, 0.001, -0.002, 0.01]),
        ("rational_polynomial", [-0.2, 0.05, 0.001, -0.002, 0.01, 0.1, 0.02, 0.003]),
        ("equidistant", [0.1, -0.02, 0.003, -0.001]),
        ("plumb_bob", []),
    ],
)
def test_rays_invert_opencv_projection(model: str, d: list[float]) -> None:
    camera = CameraModel.from_msg(_info(model, d))
    if model == "equidistant":
        pixels, _ = cv2.fisheye.projectPoints(
            POINTS.reshape(-1, 1, 3), np.zeros(3), np.zeros(3), camera.k, camera.d
        )
    else:
        pixels, _ = cv2.projectPoints(
            POINTS, np.zeros(3), np.zeros(3), camera.k, camera.d if d else None
        )
    rays = camera.rays(pixels.reshape(-1, 2))
    np.testing.assert_allclose(rays[:, 2], 1.0)
    np.testing.assert_allclose(rays * POINTS[:, 2:], POINTS, atol=1e-9)


def test_pinhole_rays_are_the_analytic_formula_and_nan_stays_nan() -> None:
    camera = CameraModel.from_msg(_info("", []))
    rays = camera.rays(np.array([[320.0, 240.0], [820.0, -270.0], [np.nan, 1.0]]))
    np.testing.assert_allclose(rays[:2], [[0.0, 0.0, 1.0], [1.0, -1.0, 1.0]])
    assert np.isnan(rays[2]).all()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"k": [0.0] * 9}, "uncalibrated"),
        ({"k": [float("nan")] * 9}, "9 finite"),
        ({"distortion_model": "weird", "d": [0.1]}, "not supported"),
        ({"distortion_model": "equidistant", "d": [0.1, 0.2]}, "4 coefficients"),
    ],
)
def test_unusable_camera_info_is_refused_with_a_reason(changes: dict, message: str) -> None:
    info = _info("plumb_bob", [0.0] * 5)
    for field, value in changes.items():
        setattr(info, field, value)
    with pytest.raises(CameraGeometryError, match=message):
        CameraModel.from_msg(info)


def test_camera_info_of_another_size_is_reported() -> None:
    camera = CameraModel.from_msg(_info("plumb_bob", [], 640, 480))
    assert camera.size_problem(640, 480) is None
    assert "camera_info is 640x480 but the image is 320x240" == camera.size_problem(320, 240)


def test_depth_images_in_millimetres_and_metres_with_invalid_pixels() -> None:
    mm = np.array([[0, 1500], [2000, 65535]], dtype=np.uint16)
    np.testing.assert_allclose(
        depth_image_metres(array_to_image_msg(mm, "16UC1")), [[np.nan, 1.5], [2.0, 65.535]]
    )
    metres = np.array([[np.nan, np.inf], [-1.0, 2.5]], dtype=np.float32)
    out = depth_image_metres(array_to_image_msg(metres, "32FC1", is_bigendian=True))
    assert np.isnan(out[0]).all() and np.isnan(out[1, 0]) and out[1, 1] == 2.5
    with pytest.raises(CameraGeometryError, match="not a depth image"):
        depth_image_metres(array_to_image_msg(np.zeros((2, 2, 3), np.uint8), "rgb8"))


def test_depth_is_the_median_of_valid_pixels_in_the_window() -> None:
    depth = np.full((6, 8), 2.0, dtype=np.float32)
    depth[0:3, 0:3] = [[np.nan, 4.0, 4.0], [np.nan, 1.0, 4.0], [np.nan, np.nan, np.nan]]
    uv = np.array([[1.0, 1.0], [1.4, 0.6], [6.0, 4.0], [-5.0, 2.0], [np.nan, 0.0], [0.0, 2.0]])
    out = depth_at(depth, uv, 3, (6, 8))
    # (1, 1): window rows 0..2, cols 0..2 -> valid 4, 4, 1, 4 -> median (4 + 4) / 2 = 4.
    assert out[0] == 4.0 and out[1] == 4.0
    assert out[2] == 2.0  # inside the plane
    assert np.isnan(out[3]) and np.isnan(out[4])  # outside the image, no pixel
    # (0, 2): window rows 1..3, cols -1..1 (clipped) -> valid 1, 2, 2 -> median 2.
    assert out[5] == 2.0
    # A depth image of half the resolution: pixels are scaled onto it.
    half = np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32)
    np.testing.assert_allclose(
        depth_at(half, np.array([[0.5, 0.5], [2.5, 2.5]]), 1, (4, 4)), [1, 4]
    )


def test_metric_points_are_rays_times_depth() -> None:
    camera = CameraModel.from_msg(_info("", []))
    depth = np.full((480, 640), 3.0, dtype=np.float32)
    depth[:, 600:] = np.nan
    uv = np.array([[320.0, 240.0], [420.0, 138.0], [630.0, 100.0]])
    xyz = keypoint_positions(uv, (480, 640), camera, depth, 5)
    np.testing.assert_allclose(xyz[:2], [[0.0, 0.0, 3.0], [0.6, -0.6, 3.0]], atol=1e-12)
    assert np.isnan(xyz[2]).all()
    np.testing.assert_allclose(keypoint_positions(uv, (480, 640), camera, None, 5)[1, 2], 1.0)


def test_roi_crops_grow_by_the_margin_clamp_and_empty_means_nothing() -> None:
    assert static_box([0, 0, 0, 0]) is None and static_box([1, 2, 3, 4]) == (1, 2, 3, 4)
    whole = crop_for(None, 0.1, 640, 480)
    assert (whole.x0, whole.y0, whole.x1, whole.y1) == (0, 0, 640, 480)
    crop = crop_for((100, 50, 200, 100), 0.1, 640, 480)
    assert (crop.x0, crop.y0, crop.x1, crop.y1) == (80, 40, 320, 160)
    edge = crop_for((600, 450, 100, 100), 0.5, 640, 480)
    assert (edge.x0, edge.y0, edge.x1, edge.y1) == (550, 400, 640, 480)
    assert crop_for((10, 10, 0, 5), 0.1, 640, 480) is None
    assert crop_for((700, 10, 20, 20), 0.0, 640, 480) is None
    np.testing.assert_allclose(
        crop.to_full(np.array([[0.0, 0.0], [1.5, 2.5]])), [[80, 40], [81.5, 42.5]]
    )
    image = np.arange(480 * 640 * 3, dtype=np.int64).reshape(480, 640, 3)
    assert (
        crop.apply(image).shape == (120, 240, 3) and crop.apply(image)[0, 0, 0] == image[40, 80, 0]
    )
    msg = RegionOfInterest(x_offset=5, y_offset=6, width=7, height=8)
    assert box_from_msg(msg) == (5, 6, 7, 8)


def test_markers_name_every_positioned_keypoint_and_clear_the_rest() -> None:
    header = Header(frame_id="cam")
    xyz = np.array([[0.0, 0.0, 1.0], [np.nan, np.nan, np.nan], [0.1, 0.2, 2.0]])
    array = keypoint_markers(
        header, np.array([0, 1, 0]), xyz, np.array([0, 0, 1]), ["nose", "tail"],
        [(255, 0, 0), (0, 255, 0)], 0.05,
    )  # fmt: skip
    kinds = [(m.action, m.type) for m in array.markers]
    assert kinds[0][0] == Marker.DELETEALL
    spheres = [m for m in array.markers if m.type == Marker.SPHERE]
    labels = [m.text for m in array.markers if m.type == Marker.TEXT_VIEW_FACING]
    assert labels == ["nose", "nose #1"] and len(spheres) == 2
    assert spheres[0].color.r == 1.0 and spheres[0].scale.x == 0.05
    assert spheres[1].pose.position.z == 2.0 and spheres[1].header.frame_id == "cam"
    assert len({m.id for m in array.markers[1:]}) == 4  # stable, distinct ids


def _status(health: Health, arrivals: int = 1, processed: int = 1, delay: float | None = 0.1):
    stats = FrameStats()
    for _ in range(arrivals):
        stats.arrived()
    for _ in range(processed):
        stats.processed(0.01, 0.005)
        stats.published(delay)
    snap = stats.snapshot()
    return build_status("n: keypoint detector", "cpu", "active", True, snap, {}, health), snap


def test_diagnostics_levels_follow_diagnostic_updater() -> None:
    ok, _ = _status(Health())
    assert ok.level == DiagnosticStatus.OK
    values = {kv.key: kv.value for kv in ok.values}
    for key in (
        "Events in window", "Events since startup", "Duration of window (s)",
        "Actual frequency (Hz)", "Earliest timestamp delay:", "Latest timestamp delay:",
        "Earliest acceptable timestamp delay:", "Latest acceptable timestamp delay:",
        "Late diagnostic update count:", "Early diagnostic update count:",
        "Zero seen diagnostic update count:",
    ):  # fmt: skip
        assert key in values, key
    assert values["Events in window"] == "1" and values["Latest timestamp delay:"] == "0.100000"
    # Expected rate bounds with FrequencyStatus's 10 % tolerance: far too slow is a WARN.
    slow, _ = _status(Health(rate_min_hz=1e6))
    assert slow.level == DiagnosticStatus.WARN and "below expected_rate_min" in slow.message
    assert {kv.key for kv in slow.values} >= {"Minimum acceptable frequency (Hz)"}
    fast, _ = _status(Health(rate_max_hz=1e-6))
    assert fast.level == DiagnosticStatus.WARN and "above expected_rate_max" in fast.message
    target, _ = _status(Health(rate_min_hz=5.0, rate_max_hz=5.0), processed=0)
    assert target.level == DiagnosticStatus.ERROR  # no events while a rate is expected
    assert "Target frequency (Hz)" in {kv.key for kv in target.values}
    # TimeStampStatus: stale, future and zero stamps are errors.
    for delay, reason in ((10.0, "too far in past"), (-2.0, "too far in future"), (None, "zero")):
        stamped, _ = _status(Health(max_stamp_delay_s=5.0), delay=delay)
        assert stamped.level == DiagnosticStatus.ERROR and reason in stamped.message
    # An input silent for longer than the timeout is an error, paused is fine.
    stats = FrameStats()
    stats.arrived()
    silent = build_status(
        "n", "cpu", "active", True, stats.snapshot(), {}, Health(input_timeout_s=0.0)
    )
    assert silent.level == DiagnosticStatus.ERROR and "no input images for" in silent.message
    paused = build_status(
        "n", "cpu", "active", False, stats.snapshot(), {}, Health(input_timeout_s=0.0, paused=True)
    )
    assert paused.level == DiagnosticStatus.OK and "paused" in paused.message
    missing, _ = _status(Health(geometry_problem="no metric 3-D: no depth image received"))
    assert missing.level == DiagnosticStatus.WARN and "no depth image" in missing.message


def test_sweep_bags_side_topics_and_depth_figures() -> None:
    from skp_ros.camera_geometry import side_topics
    from skp_ros.camera_sweep import sweep_distance
    from skp_ros.replay_geometry import depth_figures, sweep_side_messages

    assert side_topics("/camera/image_raw") == ("/camera/camera_info", "/camera/depth/image_raw")
    assert side_topics("/cam/image/compressed")[0] == "/cam/camera_info"
    info, depth = sweep_side_messages(3, 64, 48, Header(frame_id="camera"))
    assert (info.width, info.height, info.header.frame_id) == (64, 48, "camera")
    assert depth_image_metres(depth)[0, 0] == pytest.approx(sweep_distance(3), abs=5e-4)
    points = {
        1: np.array([[0.1, 0.2, 1.5], [np.nan, np.nan, np.nan]]),
        2: np.full((2, 3), np.nan),
    }
    figures = depth_figures(points, {1: 1.499, 2: 1.5})
    assert figures["frames"] == 2 and figures["frames_with_3d"] == 1
    assert (figures["keypoints_with_3d"], figures["keypoints"]) == (1, 4)
    assert figures["depth_error_mm_p50"] == pytest.approx(1.0)
    assert depth_figures({2: points[2]}, {}) is None
