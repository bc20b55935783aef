"""From keypoint pixels to rays and 3-D points: the camera's CameraInfo and a depth image.

A robot acts on positions, not pixels. With the camera's intrinsics (``K``) and distortion
(``D``) every keypoint (u, v) becomes the undistorted ray through it, written as the point at
z = 1 in the camera's optical frame (x right, y down, z forward, REP 103); with a depth image
registered to the colour camera it becomes the metric point ``ray * depth``. These are the
semantics of image_geometry's ``PinholeCameraModel.projectPixelTo3dRay`` for a raw image.

Depth is read robustly: the median of the valid pixels in a small window around the keypoint
(a keypoint on an object's edge would otherwise take the background's depth one pixel over),
NaN when the window holds no valid pixel. Invalid depth follows REP 118: 0 in 16UC1
millimetres, NaN / inf / <= 0 in 32FC1 metres.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from sensor_msgs.msg import CameraInfo, Image

from skp_ros.headers import copy_header
from skp_ros.image_conversion import ImageConversionError, image_msg_to_array

__all__ = [
    "DISTORTION_MODELS",
    "CameraGeometryError",
    "CameraModel",
    "depth_at",
    "depth_image_metres",
    "keypoint_positions",
    "pinhole_camera_info",
    "side_topics",
]

DISTORTION_MODELS = ("plumb_bob", "rational_polynomial", "equidistant")
"""Distortion models of sensor_msgs/CameraInfo that :class:`CameraModel` undoes."""

# Tight enough that re-projecting an undistorted pixel lands within 1e-6 px of it.
_UNDISTORT_CRITERIA = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-12)


class CameraGeometryError(ValueError):
    """A CameraInfo or depth image cannot be used; the message says which field and why."""


@dataclass(frozen=True)
class CameraModel:
    """Intrinsics and distortion of one camera, validated once per CameraInfo."""

    k: np.ndarray  # [3, 3] float64
    d: np.ndarray  # [N] float64 distortion coefficients (may be empty)
    distortion_model: str
    width: int
    height: int

    @classmethod
    def from_msg(cls, msg: CameraInfo) -> CameraModel:
        """Validate a CameraInfo; raise :class:`CameraGeometryError` naming the problem."""
        k = np.asarray(msg.k, dtype=np.float64)
        if k.shape != (9,) or not np.isfinite(k).all():
            raise CameraGeometryError("camera_info K must hold 9 finite numbers")
        k = k.reshape(3, 3)
        if k[0, 0] <= 0 or k[1, 1] <= 0:
            raise CameraGeometryError(
                f"camera_info K has fx = {k[0, 0]:g}, fy = {k[1, 1]:g}: an uncalibrated camera "
                "(both must be > 0)"
            )
        d = np.asarray(msg.d, dtype=np.float64).reshape(-1)
        if not np.isfinite(d).all():
            raise CameraGeometryError("camera_info D holds non-finite values")
        model = str(msg.distortion_model)
        if d.size and np.any(d != 0) and model not in DISTORTION_MODELS:
            raise CameraGeometryError(
                f"camera_info distortion_model {model!r} is not supported (supported: "
                f"{', '.join(DISTORTION_MODELS)})"
            )
        if model == "equidistant" and d.size != 4:
            raise CameraGeometryError(f"equidistant distortion needs 4 coefficients, got {d.size}")
        if model in ("plumb_bob", "rational_polynomial") and d.size not in (0, 4, 5, 8, 12, 14):
            raise CameraGeometryError(f"{model} distortion with {d.size} coefficients")
        return cls(k=k, d=d, distortion_model=model, width=int(msg.width), height=int(msg.height))

    def size_problem(self, width: int, height: int) -> str | None:
        """Why this model does not describe a width x height image, or None if it does."""
        if self.width and self.height and (self.width, self.height) != (width, height):
            return f"camera_info is {self.width}x{self.height} but the image is {width}x{height}"
        return None

    def rays(self, uv: np.ndarray) -> np.ndarray:
        """Undistorted rays [N, 3] through pixels [N, 2], as points at z = 1 (NaN stays NaN)."""
        points = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
        rays = np.full((points.shape[0], 3), np.nan)
        finite = np.isfinite(points).all(axis=1)
        if not finite.any():
            return rays
        rays[finite, 2] = 1.0
        pixels = points[finite].reshape(-1, 1, 2)
        if not self.d.size or not np.any(self.d):
            normalized = cv2.undistortPoints(pixels, self.k, None)
        elif self.distortion_model == "equidistant":
            normalized = cv2.fisheye.undistortPoints(
                pixels, self.k, self.d, criteria=_UNDISTORT_CRITERIA
            )
        else:
            normalized = cv2.undistortPoints(
                pixels, self.k, self.d, R=None, P=None, criteria=_UNDISTORT_CRITERIA
            )
        rays[finite, :2] = normalized.reshape(-1, 2)
        return rays


def depth_image_metres(msg: Image) -> np.ndarray:
    """A depth image as float32 metres [H, W], invalid pixels NaN (REP 118).

    16UC1 (and mono16) holds millimetres, 0 meaning no reading; 32FC1 holds metres, where NaN,
    inf and values <= 0 mean no reading. Raises :class:`CameraGeometryError`.
    """
    encoding = str(msg.encoding).strip().lower()
    if encoding not in ("16uc1", "mono16", "32fc1"):
        raise CameraGeometryError(
            f"depth encoding {msg.encoding!r} is not a depth image (use 16UC1 millimetres or "
            "32FC1 metres)"
        )
    try:
        values = image_msg_to_array(msg)[..., 0]
    except ImageConversionError as exc:
        raise CameraGeometryError(f"bad depth image: {exc}") from None
    if encoding == "32fc1":
        metres = values.astype(np.float32, copy=True)
        metres[~np.isfinite(metres) | (metres <= 0)] = np.nan
        return metres
    metres = values.astype(np.float32) / 1000.0
    metres[values == 0] = np.nan
    return metres


def depth_at(
    depth: np.ndarray, uv: np.ndarray, window: int, image_size: tuple[int, int]
) -> np.ndarray:
    """Robust depth [N] (metres) at pixels uv [N, 2] of an image of ``image_size`` (h, w).

    The depth image may have another resolution than the colour image (same field of view):
    pixels are scaled onto it. Each keypoint takes the median of the valid depth pixels in a
    ``window`` x ``window`` square around it; NaN when none is valid or the pixel is NaN.
    """
    height, width = image_size
    depth_h, depth_w = depth.shape
    points = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
    scale = np.array([depth_w / width, depth_h / height])
    centre = (points + 0.5) * scale - 0.5
    finite = np.isfinite(centre).all(axis=1)
    centre = np.where(finite[:, None], np.rint(centre), -1.0).astype(np.int64)
    radius = max(int(window), 1) // 2
    offsets = np.arange(-radius, radius + 1)
    cols = centre[:, 0, None, None] + offsets[None, None, :]  # [N, 1, w]
    rows = centre[:, 1, None, None] + offsets[None, :, None]  # [N, w, 1]
    inside = (rows >= 0) & (rows < depth_h) & (cols >= 0) & (cols < depth_w)
    patch = depth[np.clip(rows, 0, depth_h - 1), np.clip(cols, 0, depth_w - 1)]
    patch = np.where(inside & finite[:, None, None], patch, np.nan).reshape(points.shape[0], -1)
    valid = np.isfinite(patch)
    result = np.full(points.shape[0], np.nan, dtype=np.float64)
    rows_with_depth = valid.any(axis=1)
    if rows_with_depth.any():
        # Median of the valid values only: sort NaNs to the end, index the middle.
        ordered = np.sort(patch[rows_with_depth], axis=1)
        counts = valid[rows_with_depth].sum(axis=1)
        low = ordered[np.arange(counts.size), (counts - 1) // 2]
        high = ordered[np.arange(counts.size), counts // 2]
        result[rows_with_depth] = (low + high) / 2.0
    return result


def keypoint_positions(
    uv: np.ndarray,
    image_size: tuple[int, int],
    camera: CameraModel,
    depth: np.ndarray | None,
    window: int,
) -> np.ndarray:
    """x, y, z [N, 3] of pixels uv [N, 2]: rays at z = 1, or metric points with depth (metres).

    Where the depth window holds no valid pixel the point is NaN (RViz skips it).
    """
    rays = camera.rays(uv)
    if depth is None:
        return rays
    return rays * depth_at(depth, uv, window, image_size)[:, None]


def pinhole_camera_info(k: np.ndarray, width: int, height: int, header: Any = None) -> CameraInfo:
    """A CameraInfo for an undistorted pinhole ``k`` (e.g. the synthetic sweep camera)."""
    info = CameraInfo(
        width=int(width),
        height=int(height),
        distortion_model="plumb_bob",
        d=[0.0] * 5,
        k=[float(v) for v in np.asarray(k, dtype=np.float64).reshape(9)],
        r=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
        p=[
            float(v)
            for v in np.hstack([np.asarray(k, dtype=np.float64), np.zeros((3, 1))]).reshape(12)
        ],
    )
    if header is not None:
        info.header = copy_header(header)
    return info


def side_topics(image_topic: str) -> tuple[str, str]:
    """(camera_info, depth) topics of an image topic, named as camera drivers name them.

    ``/camera/image_raw`` -> ``/camera/camera_info`` and ``/camera/depth/image_raw``.
    """
    base = image_topic.removesuffix("/compressed")
    namespace = base.rsplit("/", 1)[0]
    return f"{namespace}/camera_info", f"{namespace}/depth/image_raw"
