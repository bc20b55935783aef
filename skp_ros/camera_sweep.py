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
