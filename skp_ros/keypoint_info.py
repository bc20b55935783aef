"""The latched ``~/keypoint_info`` table: what every id, field and topic of the node means.

Consumers need names and colours for the ids in the cloud, and the cloud's layout, without
reading skp's source: one JSON document (std_msgs/String), published once per configure on a
transient-local topic so late subscribers get it too.
"""

from __future__ import annotations

from typing import Any

from skp_ros.keypoint_msgs import KEYPOINT_FIELDS

__all__ = ["INFO_FORMAT", "INFO_VERSION", "keypoint_info"]

INFO_FORMAT = "skp_keypoint_info"
INFO_VERSION = 2  # 2: x, y, z and uint32 id in the cloud, per-camera topics


def keypoint_info(
    bundle: Any,
    node: str,
    bundle_path: str,
    loaded: Any,
    camera_topics: dict[str, dict[str, str]],
) -> dict[str, Any]:
    """The table as a JSON-ready dict; ``camera_topics`` maps camera ('' alone) to its outputs."""
    landmark_names = bundle.landmark_names or [
        f"landmark{j}" for j in range(bundle.num_landmarks or 0)
    ]
    single = list(camera_topics) == [""]
    return {
        "format": INFO_FORMAT,
        "version": INFO_VERSION,
        "node": node,
        "bundle": bundle_path,
        "model": loaded.model_id,
        "device": loaded.device,
        "keypoints": [
            {"id": i, "name": name, "color_rgb": list(color)}
            for i, (name, color) in enumerate(
                zip(bundle.keypoint_names, bundle.keypoint_colors, strict=True)
            )
        ],
        "landmarks": [{"id": j, "name": name} for j, name in enumerate(landmark_names)],
        "topics": camera_topics[""] if single else {},
        "cameras": {} if single else camera_topics,
        "cloud_fields": [field.name for field in KEYPOINT_FIELDS],
        "position": (
            "x, y, z in the image's frame_id (camera optical frame): the metric point with a "
            "matched depth image, the undistorted ray at z = 1 with camera_info only, else NaN"
        ),
        "pixel_convention": (
            "u right, v down, in pixels of the input image; the centre of the top-left "
            "pixel is (0, 0) (OpenCV / image_geometry)"
        ),
        "score": (
            "peak attention probability in [0, 1]; keypoints below score_threshold are "
            "omitted from the cloud (their ids are absent)"
        ),
        "landmark_score": "mean keypoint score of the frame",
    }
