"""One camera's /diagnostics status, from the node's state, settings and counters.

The level rules live in :mod:`skp_ros.diagnostics`; this gathers what they judge (the
expected rates, timeouts and stamp limits from the runtime parameters, the camera's geometry
and the device fallback) and what a person reading ``rqt_robot_monitor`` wants next to them.
"""

from __future__ import annotations

from typing import Any

from diagnostic_msgs.msg import DiagnosticStatus

from skp_ros.camera_stream import CameraStream
from skp_ros.diagnostics import Health, build_status, stamp_problems
from skp_ros.parameters import NodeSettings

__all__ = ["camera_status"]


def camera_status(
    node_name: str,
    stream: CameraStream,
    state: str,
    enabled: bool,
    settings: NodeSettings | None,
    loaded: Any,
    runtime: dict[str, Any],
) -> DiagnosticStatus:
    """The status of one camera; its name ends with the camera when there are several."""
    snap = stream.stats.snapshot()
    geometry = stream.geometry
    health = Health(
        rate_min_hz=runtime["expected_rate_min"],
        rate_max_hz=runtime["expected_rate_max"],
        input_timeout_s=runtime["input_timeout"],
        max_stamp_delay_s=runtime["max_stamp_age"],
        paused=not enabled,
        geometry=geometry.label if geometry else "none (no frame processed yet)",
        geometry_problem=geometry.problem if geometry else "",
        device_warning=loaded.device_warning if loaded is not None else "",
    )
    for problem in stamp_problems(snap, health):
        stream.stamp_counts[problem] += 1
    info: dict[str, object] = {
        "camera": stream.topics.name,
        "model": loaded.model_id if loaded else "",
        "bundle": settings.bundle if settings else "",
        "device": loaded.device if loaded else "",
        "dtype": loaded.dtype if loaded else "",
        "num_keypoints": loaded.detector.num_keypoints if loaded else 0,
        "num_views": loaded.detector.num_views if loaded else 0,
        "readout": settings.readout if settings else "",
        "input_topic": stream.input_topic,
        "camera_info_topic": stream.topics.camera_info,
        "depth_topic": stream.topics.depth if settings and settings.use_depth else "",
        "input_transport": settings.input_transport if settings else "",
        "score_threshold": runtime["score_threshold"],
        "smoothing": runtime["smoothing"],
        "debug_subscribers": stream.matched.get("debug_image", 0),
    }
    suffix = f" ({stream.topics.name})" if stream.topics.name else ""
    return build_status(
        f"{node_name}: keypoint detector{suffix}",
        loaded.device if loaded else "",
        state,
        stream.subscribed,
        snap,
        info,
        health,
        stream.stamp_counts,
    )
