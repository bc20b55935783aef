"""Draw keypoints (with ids) and an optional attention heat map onto an RGB image.

ROS-free on purpose: the node's ``~/debug_image`` and the offline report draw with the same
code, so what a person sees on the robot and in a report is the same picture.

Coordinates are (u, v) pixels with the centre of pixel (row i, col j) at (j, i), the OpenCV and
ROS image_geometry convention that ``skp_core.detector.Detection.pixels`` uses. Drawing is
sub-pixel accurate (OpenCV ``shift``) and markers are drawn after all labels, so the pixel under
a keypoint always shows that keypoint's colour even when labels overlap.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

__all__ = [
    "blend_heatmap",
    "combine_maps",
    "draw_keypoints",
    "render_overlay",
]

_SHIFT = 4  # OpenCV fixed-point bits for sub-pixel drawing
_SCALE = 1 << _SHIFT

Color = tuple[int, int, int]


def _check_image(image: np.ndarray) -> np.ndarray:
    values = np.asarray(image)
    if values.dtype != np.uint8 or values.ndim != 3 or values.shape[2] != 3:
        raise ValueError(
            f"expected an RGB uint8 image [H, W, 3], got {values.dtype} {values.shape}"
        )
    return values


def default_radius(height: int, width: int) -> int:
    """Marker radius that stays visible from thumbnails to 4K frames."""
    return max(3, round(min(height, width) / 100))


def _outline(color: Color) -> Color:
    """Black or white, whichever contrasts with ``color``, for rings and label halos."""
    r, g, b = color
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 110 else (255, 255, 255)


def _fixed(u: float, v: float) -> tuple[int, int]:
    return round(u * _SCALE), round(v * _SCALE)


def draw_keypoints(
    image: np.ndarray,
    uv: np.ndarray,
    colors: Sequence[Color],
    labels: Sequence[str] | None = None,
    *,
    radius: int | None = None,
    marker: str = "circle",
    copy: bool = True,
) -> np.ndarray:
    """Draw K keypoints ``uv`` [K, 2] with RGB ``colors`` (one per keypoint) and ``labels``.

    ``marker`` is "circle" (filled disc with a contrasting ring) or "square" (used for regressed
    landmarks so they are not mistaken for keypoints). Non-finite points are skipped. Returns a
    new image unless ``copy`` is False, in which case ``image`` (contiguous) is drawn on.
    """
    canvas = _check_image(image)
    canvas = canvas.copy() if copy else canvas
    points = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
    if len(colors) < len(points):
        raise ValueError(f"{len(points)} keypoints but only {len(colors)} colours")
    if labels is not None and len(labels) < len(points):
        raise ValueError(f"{len(points)} keypoints but only {len(labels)} labels")
    if marker not in ("circle", "square"):
        raise ValueError(f"marker must be 'circle' or 'square', got {marker!r}")
    height, width = canvas.shape[:2]
    r = default_radius(height, width) if radius is None else int(radius)
    finite = np.isfinite(points).all(axis=1)
    font_scale = max(0.35, r / 8)
    thickness = max(1, r // 4)
    if labels is not None:
        for (u, v), ok, label, color in zip(points, finite, labels, colors, strict=False):
            if not ok or not label:
                continue
            org = (round(u + r + 2), round(v - r - 2))
            halo = _outline(tuple(int(c) for c in color))
            cv2.putText(
                canvas,
                label,
                org,
                cv2.FONT_HERSHEY_SIMPLEX,
                font_scale,
                halo,
                thickness + 2,
                cv2.LINE_AA,
            )
            cv2.putText(
                canvas,
                label,
                org,
                cv2.FONT_HERSHEY_SIMPLEX,
                font_scale,
                tuple(int(c) for c in color),
                thickness,
                cv2.LINE_AA,
            )
    for (u, v), ok, color in zip(points, finite, colors, strict=False):
        if not ok:
            continue
        rgb = tuple(int(c) for c in color)
        ring = _outline(rgb)
        centre = _fixed(u, v)
        if marker == "circle":
            cv2.circle(canvas, centre, (r + 1) * _SCALE, ring, 1, cv2.LINE_AA, _SHIFT)
            cv2.circle(canvas, centre, r * _SCALE, rgb, -1, cv2.LINE_8, _SHIFT)
        else:
            outer = (
                (centre[0] - (r + 1) * _SCALE, centre[1] - (r + 1) * _SCALE),
                (centre[0] + (r + 1) * _SCALE, centre[1] + (r + 1) * _SCALE),
            )
            inner = (
                (centre[0] - r * _SCALE, centre[1] - r * _SCALE),
                (centre[0] + r * _SCALE, centre[1] + r * _SCALE),
            )
            cv2.rectangle(canvas, *outer, ring, 1, cv2.LINE_8, _SHIFT)
            cv2.rectangle(canvas, *inner, rgb, -1, cv2.LINE_8, _SHIFT)
    return canvas


def combine_maps(maps: np.ndarray) -> np.ndarray:
    """Per-pixel maximum over K maps [K, S, S] (or one map [S, S]), scaled to [0, 1].

    The maximum (not the sum) keeps each keypoint's blob visible however many there are.
    """
    values = np.asarray(maps, dtype=np.float32)
    if values.ndim == 3:
        values = values.max(axis=0) if values.shape[0] else np.zeros(values.shape[1:], np.float32)
    if values.ndim != 2:
        raise ValueError(f"maps must be [K, S, S] or [S, S], got shape {np.shape(maps)}")
    values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(values.min(initial=0.0)), float(values.max(initial=0.0))
    if high <= low:
        return np.zeros_like(values)
    return (values - low) / (high - low)


def blend_heatmap(
    image: np.ndarray,
    heat: np.ndarray,
    alpha: float = 0.6,
    colormap: int = cv2.COLORMAP_JET,
) -> np.ndarray:
    """Blend ``heat`` ([h, w] in [0, 1], any size) over ``image`` as a colour map.

    The colour's weight grows with the heat (``alpha * heat``), so cold regions keep the
    camera image and only the attention blobs are tinted. Returns a new uint8 [H, W, 3] image.
    """
    canvas = _check_image(image)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    values = np.asarray(heat, dtype=np.float32)
    if values.ndim != 2 or values.size == 0:
        raise ValueError(f"heat must be a non-empty [h, w] array, got shape {values.shape}")
    height, width = canvas.shape[:2]
    resized = cv2.resize(values, (width, height), interpolation=cv2.INTER_LINEAR)
    resized = np.clip(np.nan_to_num(resized, nan=0.0), 0.0, 1.0)
    colored = cv2.applyColorMap((resized * 255).astype(np.uint8), colormap)[..., ::-1]
    weight = (alpha * resized)[..., None]
    blended = canvas.astype(np.float32) * (1.0 - weight) + colored.astype(np.float32) * weight
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def render_overlay(
    image: np.ndarray,
    keypoints_uv: np.ndarray,
    colors: Sequence[Color],
    labels: Sequence[str] | None = None,
    *,
    maps: np.ndarray | None = None,
    landmarks_uv: np.ndarray | None = None,
    landmark_labels: Sequence[str] | None = None,
    alpha: float = 0.6,
) -> np.ndarray:
    """The debug picture: optional heat map, then landmarks (squares), then keypoints (discs)."""
    canvas = _check_image(image)
    canvas = blend_heatmap(canvas, combine_maps(maps), alpha) if maps is not None else canvas
    if landmarks_uv is not None and len(landmarks_uv):
        count = len(landmarks_uv)
        canvas = draw_keypoints(
            canvas, landmarks_uv, [(255, 255, 255)] * count, landmark_labels, marker="square"
        )
    return draw_keypoints(canvas, keypoints_uv, colors, labels)
