"""Named keypoints for RViz: a ``visualization_msgs/MarkerArray`` of spheres and labels.

The cloud on ``~/keypoints`` carries ids; RViz shows a name only through markers. Every
frame's array starts with a DELETEALL marker, so keypoints that vanished (score threshold,
missing depth) do not linger, then one sphere in the keypoint's colour and one text label
with its name per keypoint that has a finite 3-D position. Marker ids are stable per
(instance, keypoint), so RViz updates markers in place instead of re-creating them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from geometry_msgs.msg import Point, Pose, Quaternion, Vector3
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from skp_ros.headers import copy_header

__all__ = ["keypoint_markers"]

_LABEL_LIFT = 1.5  # labels float this many sphere diameters above their sphere


def _color(rgb: Sequence[int], alpha: float = 1.0) -> ColorRGBA:
    red, green, blue = (float(c) / 255.0 for c in rgb)
    return ColorRGBA(r=red, g=green, b=blue, a=alpha)


def keypoint_markers(
    header: Header,
    ids: np.ndarray,
    xyz: np.ndarray,
    instances: np.ndarray,
    names: Sequence[str],
    colors: Sequence[Sequence[int]],
    diameter: float,
    namespace: str = "skp_keypoints",
) -> MarkerArray:
    """Spheres + text labels [..] for keypoints ``ids`` [N] at ``xyz`` [N, 3] (NaN: skipped).

    ``names`` and ``colors`` (0-255 RGB) are indexed by keypoint id; labels of instances
    beyond the first read "name #i". Positions are in the header's frame.
    """
    clear = Marker(header=copy_header(header), ns=namespace, action=Marker.DELETEALL)
    markers = [clear]
    count = len(names)
    for keypoint, point, instance in zip(ids.tolist(), xyz, instances.tolist(), strict=True):
        if not np.isfinite(point).all():
            continue
        marker_id = 2 * (instance * count + keypoint)
        position = Point(x=float(point[0]), y=float(point[1]), z=float(point[2]))
        sphere = Marker(
            header=copy_header(header),
            ns=namespace,
            id=marker_id,
            type=Marker.SPHERE,
            action=Marker.ADD,
            pose=Pose(position=position, orientation=Quaternion(w=1.0)),
            scale=Vector3(x=diameter, y=diameter, z=diameter),
            color=_color(colors[keypoint]),
        )
        label = names[keypoint] if instance == 0 else f"{names[keypoint]} #{instance}"
        above = Point(x=position.x, y=position.y - _LABEL_LIFT * diameter, z=position.z)
        text = Marker(
            header=copy_header(header),
            ns=namespace,
            id=marker_id + 1,
            type=Marker.TEXT_VIEW_FACING,
            action=Marker.ADD,
            pose=Pose(position=above, orientation=Quaternion(w=1.0)),
            scale=Vector3(z=diameter),
            color=ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0),
            text=label,
        )
        markers.extend((sphere, text))
    return MarkerArray(markers=markers)
