"""The known camera motion of a generated bag, and the tracking error it makes measurable.

Frame-to-frame displacement of keypoints mixes the camera's own motion with keypoint error,
so it says little. A bag made from the camera sweep knows exactly how the camera moved: for
every frame the affine map from the photo to the image. `skp-replay make-bag` writes those
maps beside the bag (``camera_motion.json``), and the replay report gives the **tracking
error**: each keypoint against where the previous frame's keypoint lands under the known
motion. It is the one quality figure that needs neither labels nor real weights: a keypoint
that sticks to the object scores 0, one that sticks to the image scores the camera's motion.
Image folders (unrelated photos) have no motion, so no motion figure is reported for them.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

MOTION_FILE = "camera_motion.json"
FORMAT = "skp-camera-motion"
VERSION = 1


class CameraMotionError(ValueError):
    """A camera motion file that cannot be read; the message names the file."""


def write_camera_motion(
    bag: Path, source: str, stamps_ns: Sequence[int], photo_to_image: Sequence[np.ndarray]
) -> Path:
    """Write ``camera_motion.json`` into the bag directory: one 2x3 map per frame stamp."""
    from skp_core.atomic_files import atomic_write_text

    frames = [
        {"stamp_ns": int(stamp), "photo_to_image": np.asarray(m, np.float64).tolist()}
        for stamp, m in zip(stamps_ns, photo_to_image, strict=True)
    ]
    doc = {
        "format": FORMAT,
        "version": VERSION,
        "source": source,
        "convention": "photo pixel (x, y, 1) -> image pixel (u, v); pixel centres at integers",
        "frames": frames,
    }
    path = Path(bag) / MOTION_FILE
    atomic_write_text(path, json.dumps(doc, indent=1) + "\n")
    return path


def read_camera_motion(bag: Path) -> dict[int, np.ndarray] | None:
    """stamp -> 3x3 photo-to-image matrix, or None when the bag records no camera motion."""
    path = Path(bag) / MOTION_FILE
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
        if doc.get("format") != FORMAT or doc.get("version") != VERSION:
            raise ValueError(f"format {doc.get('format')!r} version {doc.get('version')!r}")
        motion = {}
        for frame in doc["frames"]:
            matrix = np.asarray(frame["photo_to_image"], dtype=np.float64)
            if matrix.shape != (2, 3) or not np.isfinite(matrix).all():
                raise ValueError(f"a map of shape {matrix.shape} (or not finite)")
            motion[int(frame["stamp_ns"])] = np.vstack([matrix, [0.0, 0.0, 1.0]])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CameraMotionError(f"{path}: not a readable camera motion file ({exc})") from None
    return motion


def tracking_error(
    frames: Sequence[tuple[int, int, np.ndarray, np.ndarray]],
    motion: Mapping[int, np.ndarray],
) -> dict[str, Any] | None:
    """Tracking error (px) over consecutive answered frames, with the camera's own motion.

    ``frames`` holds (bag index, stamp, ids, uv) of the frames that got keypoints. For bag
    frames i-1 and i, a keypoint id present in both is predicted at H_i H_{i-1}^-1 uv_{i-1}
    (H: photo -> image) and compared with uv_i. ``camera_motion`` is how far that moved the
    keypoint, the error a keypoint glued to the image would have. None without pairs.
    """
    ordered = sorted(frames, key=lambda f: f[0])
    errors: list[np.ndarray] = []
    moves: list[np.ndarray] = []
    pairs = 0
    for (index_a, stamp_a, ids_a, uv_a), (index_b, stamp_b, ids_b, uv_b) in itertools.pairwise(
        ordered
    ):
        if index_b != index_a + 1 or stamp_a not in motion or stamp_b not in motion:
            continue
        common, pos_a, pos_b = np.intersect1d(ids_a, ids_b, return_indices=True)
        if not common.size:
            continue
        a_to_b = motion[stamp_b] @ np.linalg.inv(motion[stamp_a])
        before = np.asarray(uv_a[pos_a], dtype=np.float64)
        predicted = before @ a_to_b[:2, :2].T + a_to_b[:2, 2]
        error = np.linalg.norm(np.asarray(uv_b[pos_b], np.float64) - predicted, axis=1)
        move = np.linalg.norm(predicted - before, axis=1)
        keep = np.isfinite(error)
        errors.append(error[keep])
        moves.append(move[keep])
        pairs += 1
    if not errors or not sum(e.size for e in errors):
        return None
    error, move = np.concatenate(errors), np.concatenate(moves)
    return {
        "p50": float(np.percentile(error, 50)),
        "p95": float(np.percentile(error, 95)),
        "mean": float(error.mean()),
        "max": float(error.max()),
        "camera_motion_p50": float(np.percentile(move, 50)),
        "pairs": pairs,
        "keypoints": int(error.size),
    }


__all__ = [
    "MOTION_FILE",
    "CameraMotionError",
    "read_camera_motion",
    "tracking_error",
    "write_camera_motion",
]
