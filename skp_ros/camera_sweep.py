"""A synthetic camera moving over a real photo: deterministic frames for demos, bags and tests.

Keypoint trackers are judged on how they follow motion, so the sweep pans, zooms and rolls
smoothly over the photo rather than repeating one still frame.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import cv2
import numpy as np

SAMPLE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "cat")


def sample_photo(name: str = "astronaut") -> np.ndarray:
    """A real RGB photo shipped with scikit-image (no download)."""
    import skimage.data

    if name not in SAMPLE_PHOTOS:
        raise ValueError(f"unknown sample photo {name!r}; choose one of {', '.join(SAMPLE_PHOTOS)}")
    return np.ascontiguousarray(getattr(skimage.data, name)()[..., :3])


def sweep_matrix(
    photo_shape: tuple[int, ...],
    index: int,
    width: int = 640,
    height: int = 480,
    period: int = 90,
    amplitude: float = 0.12,
) -> np.ndarray:
    """The 2x3 affine map from photo pixels to frame `index`'s pixels.

    Pixel centres sit at integers, as OpenCV and the node's (u, v) use: this is the camera's
    true motion, known exactly.
    """
    ph, pw = photo_shape[:2]
    phase = 2.0 * math.pi * (index % period) / period
    # Fit the photo to the frame, then move the view around the photo's centre.
    base_scale = max(width / pw, height / ph) * (1.1 + 0.1 * math.sin(phase))
    angle = 5.0 * math.sin(phase)  # degrees of camera roll
    cx = pw / 2 + amplitude * pw * math.sin(phase)
    cy = ph / 2 + amplitude * ph * math.sin(2 * phase) / 2
    matrix = cv2.getRotationMatrix2D((cx, cy), angle, base_scale)
    matrix[0, 2] += width / 2 - cx
    matrix[1, 2] += height / 2 - cy
    return matrix


def sweep_frame(
    photo: np.ndarray,
    index: int,
    width: int = 640,
    height: int = 480,
    period: int = 90,
    amplitude: float = 0.12,
) -> np.ndarray:
    """Frame `index` of the sweep: a view of `photo` panned, zoomed and rolled smoothly.

    The motion is periodic (`period` frames) so long streams stay on the photo.
    """
    matrix = sweep_matrix(photo.shape, index, width, height, period, amplitude)
    return cv2.warpAffine(
        photo, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
    )


def camera_sweep(
    photo: np.ndarray, num_frames: int, width: int = 640, height: int = 480, period: int = 90
) -> Iterator[np.ndarray]:
    """The first `num_frames` frames of the sweep."""
    for index in range(num_frames):
        yield sweep_frame(photo, index, width, height, period)


SWEEP_DISTANCE_M = 1.5
"""The photo is a poster this far in front of the camera at the sweep's mean zoom."""


def sweep_intrinsics(width: int = 640, height: int = 480) -> np.ndarray:
    """The sweep camera's K [3, 3]: a pinhole of focal length ``width`` (about 53° across).

    No distortion: the frames are rendered by an affine warp, so the ideal pinhole is exact.
    """
    focal = float(width)
    return np.array(
        [[focal, 0.0, (width - 1) / 2.0], [0.0, focal, (height - 1) / 2.0], [0.0, 0.0, 1.0]]
    )


def sweep_distance(index: int, period: int = 90) -> float:
    """Metres from the camera to the poster in frame ``index``: zooming in is moving closer.

    The sweep's scale is 1.1 + 0.1 sin(phase); the image of a plane scales as 1 / distance.
    """
    phase = 2.0 * math.pi * (index % period) / period
    return SWEEP_DISTANCE_M * 1.1 / (1.1 + 0.1 * math.sin(phase))


def sweep_depth(index: int, width: int = 640, height: int = 480, period: int = 90) -> np.ndarray:
    """Frame ``index``'s depth image registered to it: uint16 millimetres (16UC1), a plane."""
    millimetres = round(sweep_distance(index, period) * 1000.0)
    return np.full((height, width), millimetres, dtype=np.uint16)
