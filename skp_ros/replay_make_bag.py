"""skp-replay make-bag: image bags from a folder of images or from a deterministic camera sweep.

Why: a regression test needs the same input every time, so generated bags have header stamps
at a fixed rate from a fixed epoch and a sweep's frames are computed, not captured; the same
arguments always give the same bag. A sweep bag also records what the camera truly did
(camera_motion.json) and, as an RGB-D driver would, camera_info and a depth image, so the
replay can score tracking and 3-D output against ground truth.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from skp_core.image_header import PixelLimitError, check_pixel_limit
from skp_core.progress import progress as progress_bar
from skp_ros.bag_io import COMPRESSED_IMAGE_TYPE, IMAGE_TYPE, BagWriter, ns_to_stamp
from skp_ros.camera_geometry import side_topics
from skp_ros.camera_motion import write_camera_motion
from skp_ros.camera_sweep import sample_photo, sweep_frame, sweep_matrix
from skp_ros.replay_errors import ReplayError
from skp_ros.replay_geometry import sweep_side_messages

__all__ = [
    "BAG_EPOCH_NS",
    "DEFAULT_TOPIC",
    "compressed_topic",
    "frame_stamp_ns",
    "list_images",
    "load_rgb",
    "make_bag",
]

DEFAULT_TOPIC = "/camera/image_raw"
BAG_EPOCH_NS = 1_700_000_000 * 1_000_000_000
"""First header stamp of generated bags: fixed, so bags are byte-for-byte reproducible."""
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm"})
DEFAULT_SWEEP_SIZE = (640, 480)


def list_images(folder: str | Path) -> list[Path]:
    """Image files of `folder`, sorted by name (the order a camera dump is usually named in)."""
    directory = Path(folder)
    if not directory.is_dir():
        raise ReplayError(f"{directory} is not a directory")
    files = sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ReplayError(f"{directory} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


def load_rgb(path: str | Path) -> np.ndarray:
    """An image file as RGB uint8 [H, W, 3] (grey and alpha images converted)."""
    try:
        check_pixel_limit(path)
    except PixelLimitError as exc:
        raise ReplayError(f"{path}: {exc}") from None
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ReplayError(f"OpenCV cannot read {path}")
    return np.ascontiguousarray(bgr[..., ::-1])


def frame_stamp_ns(index: int, rate_hz: float) -> int:
    """Header stamp of frame `index` in a generated bag: the fixed epoch plus index / rate."""
    return BAG_EPOCH_NS + round(index * 1e9 / rate_hz)


def compressed_topic(topic: str) -> str:
    """image_transport's name for the compressed stream of `topic`."""
    return topic if topic.endswith("/compressed") else f"{topic.rstrip('/')}/compressed"


def _bag_frames(
    images_dir: str | Path | None,
    sweep: str,
    frames: int | None,
    size: tuple[int, int] | None,
) -> tuple[int, Iterator[np.ndarray], list[np.ndarray] | None]:
    """(count, frames, camera motion) for make_bag.

    A folder's images (resized only if asked, no known motion) or a sweep (with each frame's
    photo-to-image map).
    """
    if images_dir is not None:
        files = list_images(images_dir)
        files = files[:frames] if frames is not None else files

        def from_files() -> Iterator[np.ndarray]:
            for path in files:
                rgb = load_rgb(path)
                if size is not None and (rgb.shape[1], rgb.shape[0]) != size:
                    rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
                yield rgb

        return len(files), from_files(), None
    photo = sample_photo(sweep)
    width, height = size or DEFAULT_SWEEP_SIZE
    count = 90 if frames is None else frames
    motion = [sweep_matrix(photo.shape, i, width, height) for i in range(count)]
    return count, (sweep_frame(photo, i, width, height) for i in range(count)), motion


def make_bag(
    out_bag: str | Path,
    *,
    images_dir: str | Path | None = None,
    sweep: str = "astronaut",
    frames: int | None = None,
    rate: float = 10.0,
    width: int | None = None,
    height: int | None = None,
    topic: str = DEFAULT_TOPIC,
    compressed: bool = False,
    storage: str = "sqlite3",
    frame_id: str = "camera",
    jpeg_quality: int = 90,
    progress: bool = True,
) -> dict[str, Any]:
    """Write an image bag and return a summary (path, topic, msgtype, frames, storage, rate).

    Frames come from `images_dir` (sorted; kept at their own size unless width and height are
    given) or from the camera sweep over photo `sweep` (default 90 frames at 640x480). Images
    are rgb8 ``sensor_msgs/Image``, or JPEG ``CompressedImage`` on ``<topic>/compressed``.
    Header stamp and bag timestamp of frame i are ``BAG_EPOCH_NS + i / rate``. A sweep bag
    also holds ``camera_motion.json``, the camera's true motion (skp_ros.camera_motion), and,
    as an RGB-D driver publishes them, ``camera_info`` and a registered 16UC1 ``depth/image_raw``
    in the image topic's namespace with each frame's stamp (skp_ros.replay_geometry).
    """
    from skp_ros.image_conversion import rgb_to_compressed_msg, rgb_to_image_msg

    if not math.isfinite(rate) or rate <= 0:
        raise ReplayError(f"rate must be a positive number of Hz, got {rate}")
    if (width is None) != (height is None):
        raise ReplayError("give both width and height, or neither")
    if frames is not None and frames < 1:
        raise ReplayError(f"frames must be >= 1, got {frames}")
    size = None if width is None or height is None else (int(width), int(height))
    count, images, motion = _bag_frames(images_dir, sweep, frames, size)
    out_topic = compressed_topic(topic) if compressed else topic
    msgtype = COMPRESSED_IMAGE_TYPE if compressed else IMAGE_TYPE
    sizes: set[tuple[int, int]] = set()
    info_topic, depth_topic = side_topics(out_topic)
    with BagWriter(out_bag, storage) as writer:
        for index, rgb in enumerate(
            progress_bar(images, total=count, desc="make-bag", unit="frame", disable=not progress)
        ):
            if compressed:
                msg = rgb_to_compressed_msg(rgb, quality=jpeg_quality)
            else:
                msg = rgb_to_image_msg(rgb)
            stamp_ns = frame_stamp_ns(index, rate)
            msg.header.stamp = ns_to_stamp(stamp_ns)
            msg.header.frame_id = frame_id
            if motion is not None:  # a sweep: the camera and the poster's depth are known
                info, depth = sweep_side_messages(index, rgb.shape[1], rgb.shape[0], msg.header)
                writer.write(info_topic, info, stamp_ns)
                writer.write(depth_topic, depth, stamp_ns)
            writer.write(out_topic, msg, stamp_ns)
            sizes.add((rgb.shape[1], rgb.shape[0]))
    if motion is not None:  # what the tracking error is measured against
        stamps = [frame_stamp_ns(index, rate) for index in range(count)]
        write_camera_motion(Path(out_bag), f"sweep:{sweep}", stamps, motion)
    summary = {
        "bag": str(out_bag),
        "storage": storage,
        "topic": out_topic,
        "msgtype": msgtype,
        "frames": count,
        "rate_hz": rate,
        "sizes": sorted(sizes),
        "source": str(images_dir) if images_dir is not None else f"sweep:{sweep}",
        "camera_info_topic": info_topic if motion is not None else None,
        "depth_topic": depth_topic if motion is not None else None,
    }
    return summary
