"""The messages of one processed frame: keypoint and landmark clouds, markers, geometry.

Kept apart from the node so the node only schedules work: given a camera's detection in
full-image pixels, this decides which keypoints pass the score threshold, what their x, y, z
are (rays with camera_info, metric points with a matched depth image, NaN otherwise, and a
sentence saying which and why), and packs the clouds and the RViz markers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import Header
from visualization_msgs.msg import MarkerArray

from skp_ros.bag_io import stamp_to_ns
from skp_ros.camera_geometry import (
    CameraGeometryError,
    CameraModel,
    depth_image_metres,
    keypoint_positions,
)
from skp_ros.camera_stream import CameraStream
from skp_ros.keypoint_msgs import keypoints_to_cloud
from skp_ros.markers import keypoint_markers
from skp_ros.roi import Crop

__all__ = ["FrameGeometry", "FrameMessages", "build_messages", "debug_overlay", "frame_geometry"]


@dataclass(frozen=True)
class FrameGeometry:
    """How pixels of one frame become positions, and what to tell diagnostics about it."""

    camera: CameraModel | None
    depth: np.ndarray | None  # metres, NaN invalid
    label: str  # what x, y, z hold for this frame
    problem: str  # non-empty when 3-D was asked for (use_depth) and is missing

    @property
    def metric(self) -> bool:
        """True when x, y, z are metric points (a depth image was matched)."""
        return self.camera is not None and self.depth is not None

    def positions(self, uv: np.ndarray, image_size: tuple[int, int], window: int) -> np.ndarray:
        """x, y, z [N, 3] of pixels uv [N, 2] (NaN without camera_info)."""
        if self.camera is None:
            return np.full((len(uv), 3), np.nan)
        return keypoint_positions(uv, image_size, self.camera, self.depth, window)


def frame_geometry(
    stream: CameraStream,
    header: Header,
    image_size: tuple[int, int],
    use_depth: bool,
    tolerance_s: float,
) -> FrameGeometry:
    """The camera model and the depth image matched to this frame, or why there are none."""
    height, width = image_size
    camera, why = stream.camera()
    if camera is not None:
        size_problem = camera.size_problem(width, height)
        if size_problem is not None:
            camera, why = None, size_problem
    if camera is None:
        problem = f"no 3-D: {why}" if use_depth else ""
        return FrameGeometry(None, None, f"none ({why})", problem)
    if not use_depth:
        return FrameGeometry(camera, None, "rays at z = 1 (camera_info; use_depth is off)", "")
    msg, why = stream.depth_for(stamp_to_ns(header.stamp), tolerance_s)
    depth = None
    if msg is not None:
        try:
            depth = depth_image_metres(msg)
        except CameraGeometryError as exc:
            why = str(exc)
    if depth is None:
        return FrameGeometry(camera, None, f"rays at z = 1 ({why})", f"no metric 3-D: {why}")
    return FrameGeometry(camera, depth, "metric (camera_info + depth)", "")


@dataclass
class FrameMessages:
    """Everything published for one frame of one camera."""

    keypoints: PointCloud2
    ids: np.ndarray  # [N] kept keypoint ids, instance-major
    uv: np.ndarray  # [N, 2] their pixels
    landmarks: PointCloud2 | None
    markers: MarkerArray | None  # only when metric positions exist


def build_messages(
    header: Header,
    uv: np.ndarray,
    scores: np.ndarray,
    landmarks: np.ndarray | None,
    geometry: FrameGeometry,
    image_size: tuple[int, int],
    threshold: float,
    depth_window: int,
    names: list[str],
    colors: list[tuple[int, int, int]],
    marker_diameter: float,
    with_markers: bool,
) -> FrameMessages:
    """Clouds (and markers) from keypoints uv [n, K, 2], scores [n, K], landmarks [n, J, 2].

    Keypoints below ``threshold`` are left out; instance i's points follow instance i - 1's.
    Regressed landmarks have no attention peak of their own: they carry their instance's mean
    keypoint score (the regressor uses every keypoint).
    """
    keep = scores >= threshold
    instance_of, ids = np.nonzero(keep)
    kept_uv = uv[keep]
    xyz = geometry.positions(kept_uv, image_size, depth_window)
    cloud = keypoints_to_cloud(header, ids, kept_uv, scores[keep], instance_of, xyz)
    landmark_cloud = None
    if landmarks is not None:
        count, num_landmarks = landmarks.shape[:2]
        flat = landmarks.reshape(-1, 2)
        landmark_cloud = keypoints_to_cloud(
            header,
            np.tile(np.arange(num_landmarks), count),
            flat,
            np.repeat(scores.mean(axis=1), num_landmarks).astype(np.float32),
            np.repeat(np.arange(count), num_landmarks),
            geometry.positions(flat, image_size, depth_window),
        )
    markers = None
    if with_markers and geometry.metric:  # built only for a subscriber: none, no work
        markers = keypoint_markers(header, ids, xyz, instance_of, names, colors, marker_diameter)
    return FrameMessages(cloud, ids, kept_uv, landmark_cloud, markers)


def debug_overlay(
    rgb: np.ndarray,
    crop: Crop,
    ids: np.ndarray,
    uv: np.ndarray,
    detection: Any,
    landmarks: np.ndarray | None,
    bundle: Any,
) -> np.ndarray:
    """The debug image: keypoints with ids (and heat maps) drawn on the full frame.

    Heat maps cover the detector's input, so they are blended only when that was the whole
    image (no region of interest).
    """
    from skp_core.overlay import render_overlay

    whole = crop.apply(rgb).shape == rgb.shape
    maps = detection.maps[ids] if detection.maps is not None and whole else None
    labels = None if landmarks is None else [f"L{j}" for j in range(len(landmarks))]
    return render_overlay(
        rgb,
        uv,
        [bundle.keypoint_colors[i] for i in ids],
        [str(i) for i in ids],
        maps=maps,
        landmarks_uv=landmarks,
        landmark_labels=labels,
    )
