"""Regions of interest: run the method on the part of the frame where the object is.

The method assumes one roughly centred object. On a robot an object detector usually knows
where that object is; cropping to its box (plus a margin, so the object is not cut at its
edges) gives the diffusion model the framing it was trained for, and the keypoints are mapped
back to full-image pixels so every consumer (and the camera geometry) sees one image.

A box is ``(x, y, width, height)`` in pixels of the full image, like
``sensor_msgs/RegionOfInterest``; the margin is a fraction of the box's size added on every
side; the crop is clamped to the image. An empty box (zero width or height, or one wholly
outside the image) means "no object": the node then publishes nothing for the frame.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sensor_msgs.msg import RegionOfInterest

__all__ = ["Crop", "box_from_msg", "crop_for", "static_box"]

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Crop:
    """The pixels [y0:y1, x0:x1] of the full image that go through the detector."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def offset(self) -> np.ndarray:
        """Add to crop pixels to get full-image pixels (the pixel-centre convention is kept)."""
        return np.array([self.x0, self.y0], dtype=np.float64)

    def apply(self, rgb: np.ndarray) -> np.ndarray:
        """The cropped view of an [H, W, 3] image (no copy)."""
        return rgb[self.y0 : self.y1, self.x0 : self.x1]

    def to_full(self, uv: np.ndarray) -> np.ndarray:
        """Pixels [..., 2] of the crop in full-image pixels."""
        return np.asarray(uv, dtype=np.float64) + self.offset


def static_box(values: Sequence[int]) -> Box | None:
    """The node's ``roi`` parameter [x, y, width, height]; all zero (the default) means none."""
    x, y, width, height = (int(v) for v in values)
    if (x, y, width, height) == (0, 0, 0, 0):
        return None
    return x, y, width, height


def box_from_msg(msg: RegionOfInterest) -> Box:
    """A RegionOfInterest message as (x, y, width, height)."""
    return int(msg.x_offset), int(msg.y_offset), int(msg.width), int(msg.height)


def crop_for(box: Box | None, margin: float, width: int, height: int) -> Crop | None:
    """The crop of a ``width`` x ``height`` image for ``box`` grown by ``margin``.

    None box: the whole image. Returns None when the box is empty or misses the image.
    """
    if box is None:
        return Crop(0, 0, width, height)
    x, y, box_w, box_h = box
    if box_w <= 0 or box_h <= 0:
        return None
    grow_x, grow_y = margin * box_w, margin * box_h
    x0 = max(0, math.floor(x - grow_x))
    y0 = max(0, math.floor(y - grow_y))
    x1 = min(width, math.ceil(x + box_w + grow_x))
    y1 = min(height, math.ceil(y + box_h + grow_y))
    if x1 <= x0 or y1 <= y0:
        return None
    return Crop(x0, y0, x1, y1)
