"""Overlay figures of a replay: keypoints drawn on the bag's frames, as a strip and a video.

Why: numbers say how many frames came back and how late; a reviewer also has to see whether
the keypoints sit on the object. The strip picks frames spread over the bag, the video follows
the first ones; both are captioned with the frame's index in the bag and its latency.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from skp_core.overlay import draw_keypoints
from skp_core.palette import default_colors
from skp_ros.bag_io import COMPRESSED_IMAGE_TYPE, read_messages

__all__ = ["draw_overlay", "render_outputs"]

STRIP_HEIGHT = 240


def draw_overlay(rgb: np.ndarray, ids: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """The frame with its keypoints drawn in the node's default palette, labelled by id."""
    palette = default_colors(int(np.max(ids)) + 1) if len(ids) else []
    colors = [palette[int(i)] for i in ids]
    return draw_keypoints(rgb, uv, colors, [str(int(i)) for i in ids])


def _caption(rgb: np.ndarray, text: str) -> np.ndarray:
    """Write `text` in the top-left corner, white on a dark band, so it reads on any frame."""
    cv2.rectangle(rgb, (0, 0), (rgb.shape[1], 18), (0, 0, 0), -1)
    cv2.putText(rgb, text, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (255, 255, 255), 1)
    return rgb


def _to_height(rgb: np.ndarray, height: int) -> np.ndarray:
    width = max(1, round(rgb.shape[1] * height / rgb.shape[0]))
    return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)


def _select(items: Sequence[Any], count: int) -> list[Any]:
    """`count` items spread evenly over `items` (first and last included)."""
    if count <= 0 or not items:
        return []
    if len(items) <= count:
        return list(items)
    positions = np.linspace(0, len(items) - 1, count).round().astype(int)
    return [items[p] for p in dict.fromkeys(positions.tolist())]


def _decode_image(message: Any) -> np.ndarray:
    from skp_ros.image_conversion import compressed_msg_to_rgb, image_msg_to_rgb

    msg = message.deserialize()
    if message.msgtype == COMPRESSED_IMAGE_TYPE:
        return compressed_msg_to_rgb(msg)
    return image_msg_to_rgb(msg, copy=True)


def render_outputs(
    bag: Path,
    topic: str,
    keypoints: dict[int, tuple[np.ndarray, np.ndarray]],
    bag_index: dict[int, int],
    latencies: dict[int, float],
    out_dir: Path,
    strip_frames: int,
    video: bool,
    video_frames: int,
    video_fps: float,
    notes: list[str],
) -> tuple[str | None, str | None, list[int]]:
    """Write overlay_strip.png (and overlays.mp4) from the bag's frames and their keypoints.

    Tiles and video frames are captioned with the frame's index in the bag (not among the
    answered frames, which differ whenever a frame dropped). Returns the strip's path, the
    video's path and the bag indices in the strip.
    """
    order = sorted(keypoints, key=bag_index.__getitem__)
    strip_stamps = set(_select(order, strip_frames))
    video_stamps = set(order[:video_frames]) if video else set()
    wanted = strip_stamps | video_stamps
    if not wanted:
        return None, None, []
    index_of = bag_index
    tiles: dict[int, np.ndarray] = {}
    writer = None
    video_path = out_dir / "overlays.mp4"
    video_size: tuple[int, int] | None = None
    for message in read_messages(bag, [topic]):
        stamp = message.stamp_ns
        if stamp not in wanted:
            continue
        ids, uv = keypoints[stamp]
        try:
            frame = draw_overlay(_decode_image(message), ids, uv)
        except ValueError as exc:  # ImageConversionError: a bad frame must not lose the report
            notes.append(f"frame #{index_of[stamp]} could not be drawn: {exc}")
            continue
        text = f"#{index_of[stamp]}  {latencies.get(stamp, float('nan')):.1f} ms  K={len(ids)}"
        if stamp in strip_stamps:
            tiles[stamp] = _caption(_to_height(frame, STRIP_HEIGHT), text)
        if stamp in video_stamps:
            if writer is None:
                video_size = (frame.shape[1] // 2 * 2, frame.shape[0] // 2 * 2)
                fourcc = cv2.VideoWriter.fourcc(*"mp4v")
                writer = cv2.VideoWriter(str(video_path), fourcc, video_fps, video_size)
                if not writer.isOpened():
                    notes.append("cv2.VideoWriter cannot write mp4v here; video skipped")
                    video_stamps = set()
                    writer = None
                    continue
            assert video_size is not None
            if (frame.shape[1], frame.shape[0]) != video_size:
                frame = cv2.resize(frame, video_size, interpolation=cv2.INTER_AREA)
            writer.write(np.ascontiguousarray(_caption(frame, text)[..., ::-1]))
    strip_path = None
    if tiles:
        strip = np.concatenate([tiles[s] for s in sorted(tiles, key=index_of.get)], axis=1)
        strip_path = out_dir / "overlay_strip.png"
        cv2.imwrite(str(strip_path), np.ascontiguousarray(strip[..., ::-1]))
    written_video = None
    if writer is not None:
        writer.release()
        if video_path.is_file() and video_path.stat().st_size > 0:
            written_video = str(video_path)
        else:
            notes.append("cv2.VideoWriter produced no file; video skipped")
    strip_indices = sorted(index_of[s] for s in tiles)
    return (str(strip_path) if strip_path else None), written_video, strip_indices
