"""Camera geometry in replayed bags: camera_info and depth beside the images, 3-D figures.

A generated sweep bag is a camera looking at a photo hung as a poster at a known distance
(:func:`skp_ros.camera_sweep.sweep_distance`), so besides its images it carries what a real
RGB-D camera driver publishes — ``camera_info`` in the image topic's namespace and a
registered 16UC1 ``depth`` image — and the replay can check the node's 3-D output: every
metric keypoint must lie on the poster, at its known depth.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from skp_ros.camera_geometry import pinhole_camera_info
from skp_ros.camera_sweep import sweep_depth, sweep_distance, sweep_intrinsics
from skp_ros.image_conversion import array_to_image_msg

__all__ = [
    "CAMERA_INFO_TYPE",
    "depth_figures",
    "sweep_distances",
    "sweep_side_messages",
]

CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"


def sweep_side_messages(index: int, width: int, height: int, header: Any) -> tuple[Any, Any]:
    """(CameraInfo, depth Image) of sweep frame ``index``, with the frame's header."""
    info = pinhole_camera_info(sweep_intrinsics(width, height), width, height, header)
    depth = array_to_image_msg(sweep_depth(index, width, height), "16UC1", header)
    return info, depth


def depth_figures(
    points_by_stamp: Mapping[int, np.ndarray], distance_by_stamp: Mapping[int, float]
) -> dict[str, Any] | None:
    """What the report says of the node's 3-D keypoints, or None when no frame had any.

    ``points_by_stamp`` holds each answered frame's x, y, z [K, 3] (NaN: no position);
    ``distance_by_stamp`` the poster's true distance for sweep frames (may be empty). The
    depth error is |z - true distance| in millimetres (the poster is fronto-parallel).
    """
    frames = metric = 0
    keypoints = with_depth = 0
    depths: list[np.ndarray] = []
    errors: list[np.ndarray] = []
    for stamp, xyz in points_by_stamp.items():
        frames += 1
        finite = np.isfinite(xyz).all(axis=1)
        keypoints += len(xyz)
        if not np.any(finite):
            continue
        metric += 1
        with_depth += int(np.sum(finite))
        depths.append(xyz[finite, 2])
        if stamp in distance_by_stamp:
            errors.append(np.abs(xyz[finite, 2] - distance_by_stamp[stamp]) * 1000.0)
    if not metric:
        return None
    all_depths = np.concatenate(depths)
    figures: dict[str, Any] = {
        "frames": frames,
        "frames_with_3d": metric,
        "keypoints_with_3d": with_depth,
        "keypoints": keypoints,
        "depth_m_p50": float(np.percentile(all_depths, 50)),
    }
    if errors:
        error = np.concatenate(errors)
        figures["depth_error_mm_p50"] = float(np.percentile(error, 50))
        figures["depth_error_mm_max"] = float(error.max())
    return figures


def sweep_distances(frame_of_stamp: Mapping[int, int]) -> dict[int, float]:
    """The poster's distance for each stamp of a generated sweep bag, from its frame index."""
    return {stamp: sweep_distance(index) for stamp, index in frame_of_stamp.items()}
