"""What a replay's outputs say: outputs matched to inputs by stamp, drops, latency, the summary.

Why apart from the player: the analysis only needs what arrived and when (raw CDR and receive
times), so it runs after the ROS side is shut down and can be read, and tested, without DDS.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from skp_ros.bag_io import BagError, header_stamp_ns

__all__ = ["Received", "analyse", "event_rate", "format_summary"]


def _percentiles(values: Sequence[float]) -> dict[str, float] | None:
    if not values:
        return None
    data = np.asarray(values, dtype=np.float64)
    return {
        "p50": float(np.percentile(data, 50)),
        "p90": float(np.percentile(data, 90)),
        "p99": float(np.percentile(data, 99)),
        "mean": float(data.mean()),
        "min": float(data.min()),
        "max": float(data.max()),
    }


def event_rate(times_ns: Sequence[int]) -> float | None:
    """Events per second over the span of `times_ns` (None with fewer than two events)."""
    if len(times_ns) < 2:
        return None
    span = (max(times_ns) - min(times_ns)) / 1e9
    return (len(times_ns) - 1) / span if span > 0 else None


@dataclass
class Received:
    """One output message as it arrived: raw CDR plus wall and monotonic receive times."""

    topic: str
    wall_ns: int
    mono_ns: int
    data: bytes


def _safe_stamp(data: bytes) -> int | None:
    try:
        return header_stamp_ns(data)
    except BagError:
        return None


def analyse(
    received: list[Received],
    published: dict[int, tuple[int, int]],
    keypoints_topic: str,
    publish_times: list[int],
    notes: list[str],
) -> dict[str, Any]:
    """Match outputs to inputs by stamp and compute drops, latency and rates."""
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import PointCloud2

    from skp_ros.keypoint_msgs import KeypointCloudError, cloud_to_keypoints, cloud_to_points

    latencies: dict[int, float] = {}
    keypoints: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    points: dict[int, np.ndarray] = {}
    counts: list[int] = []
    unmatched = duplicates = undecodable = 0
    receive_times: list[int] = []
    outputs = [r for r in received if r.topic == keypoints_topic]
    for item in outputs:
        stamp = _safe_stamp(item.data)
        if stamp is None or stamp not in published:
            unmatched += 1
            continue
        if stamp in keypoints:
            duplicates += 1
            continue
        try:
            cloud = deserialize_message(item.data, PointCloud2)
            ids, uv, _ = cloud_to_keypoints(cloud)
            xyz = cloud_to_points(cloud)
        except (KeypointCloudError, ValueError, TypeError) as exc:
            undecodable += 1
            notes.append(f"undecodable keypoint message: {exc}")
            continue
        keypoints[stamp] = (ids, uv)
        points[stamp] = xyz
        latencies[stamp] = (item.mono_ns - published[stamp][1]) / 1e6
        counts.append(len(ids))
        receive_times.append(item.mono_ns)
    frames_published = len(published)
    dropped = frames_published - len(keypoints)
    return {
        "frames_published": frames_published,
        "keypoint_messages_received": len(outputs),
        "matched": len(keypoints),
        "dropped": dropped,
        "drop_rate": dropped / frames_published if frames_published else None,
        "unmatched_outputs": unmatched,
        "duplicate_outputs": duplicates,
        "undecodable_outputs": undecodable,
        "latency_ms": _percentiles(list(latencies.values())),
        "keypoints_per_message": (
            {"mean": float(np.mean(counts)), "min": int(min(counts)), "max": int(max(counts))}
            if counts
            else None
        ),
        "publish_rate_hz": event_rate(publish_times),
        "processing_rate_hz": event_rate(receive_times),
        "_latencies": latencies,
        "_keypoints": keypoints,
        "_points": points,
    }


def _fmt(value: float | None, unit: str, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f} {unit}"


def _tracking_line(motion_known: bool, tracking: dict[str, Any] | None) -> str:
    if not motion_known:
        return "  tracking error     n/a (the bag records no camera motion: only sweep bags do)"
    if tracking is None:
        return "  tracking error     n/a (no two consecutive frames answered)"
    return (
        f"  tracking error     p50 {_fmt(tracking['p50'], 'px', 2)}, "
        f"p95 {_fmt(tracking['p95'], 'px', 2)} (the camera moved keypoints "
        f"{_fmt(tracking['camera_motion_p50'], 'px', 2)} per frame) over {tracking['pairs']} "
        f"frame pairs"
    )


def _points_line(points: dict[str, Any] | None) -> str:
    if not points:
        return (
            "  3-D keypoints      none (the bag has no camera_info and depth: only sweep bags do)"
        )
    line = (
        f"  3-D keypoints      {points['keypoints_with_3d']} of {points['keypoints']} in "
        f"{points['frames_with_3d']} of {points['frames']} frames, depth p50 "
        f"{_fmt(points['depth_m_p50'], 'm', 3)}"
    )
    if "depth_error_mm_p50" in points:
        line += (
            f", error against the known poster distance p50 "
            f"{_fmt(points['depth_error_mm_p50'], 'mm', 2)}, max "
            f"{_fmt(points['depth_error_mm_max'], 'mm', 2)}"
        )
    return line


def format_summary(report: dict[str, Any]) -> str:
    """The human summary printed at the end of a run."""
    latency = report.get("latency_ms") or {}
    tracking = report.get("tracking_error_px")
    drop = report.get("drop_rate")
    warmup = report.get("warmup") or {"frames": 0, "latency_ms": None}
    lines = [
        f"skp-replay: {report['bag']} ({report['storage']}) {report['topic']} "
        f"[{report['msgtype']}] -> {report['keypoints_topic']}",
        f"  frames published   {report['frames_published']} of {report['frames_in_bag']} "
        f"({report['publish_failures']} publish failures)"
        + (
            f", lockstep ({report.get('lockstep_timeouts', 0)} unanswered)"
            if (report.get("mode") or {}).get("lockstep")
            else ""
        ),
        f"  keypoint messages  {report['keypoint_messages_received']} received, "
        f"{report['matched']} matched, {report['dropped']} dropped"
        + (f" ({100 * drop:.1f} %)" if drop is not None else ""),
        f"  latency            p50 {_fmt(latency.get('p50'), 'ms')}, "
        f"p99 {_fmt(latency.get('p99'), 'ms')}",
        _tracking_line(report.get("camera_motion_known", False), tracking),
        _points_line(report.get("points_3d")),
        f"  warm-up            {warmup['frames']} frames, first answer after "
        f"{_fmt(warmup['latency_ms'], 'ms')}",
        f"  processing rate    {_fmt(report.get('processing_rate_hz'), 'Hz')} "
        f"(published at {_fmt(report.get('publish_rate_hz'), 'Hz')})",
        f"  recorded bag       {report['recorded_bag']} ({report['recorded_storage']}): "
        + (", ".join(f"{t} {n}" for t, n in report["recorded_counts"].items()) or "nothing"),
        f"  overlay strip      {report['overlay_strip'] or 'none (no matched frames)'}",
    ]
    if report.get("overlay_video"):
        lines.append(f"  overlay video      {report['overlay_video']}")
    if report.get("stopped_early"):
        lines.append(f"  STOPPED EARLY      {report['stopped_early']}")
    lines.extend(f"  note: {note}" for note in report.get("notes", []))
    return "\n".join(lines)
