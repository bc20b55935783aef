"""QoS of the keypoint node's topics, overridable per topic the standard rclpy way.

Every publisher and subscription is created with ``QoSOverridingOptions``, so a user changes
one topic's reliability, durability, history or depth with a read-only start-up parameter
``qos_overrides./<resolved topic>.<publisher|subscription>.<policy>`` (image_pipeline's policy
since Jazzy) instead of node-specific QoS parameters. ``make_qos`` builds profiles from names.
"""

from __future__ import annotations

from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
)
from rclpy.qos_overriding_options import QoSOverridingOptions, QoSPolicyKind

RELIABILITY = {"reliable": ReliabilityPolicy.RELIABLE, "best_effort": ReliabilityPolicy.BEST_EFFORT}
DURABILITY = {
    "volatile": DurabilityPolicy.VOLATILE,
    "transient_local": DurabilityPolicy.TRANSIENT_LOCAL,
}
HISTORY = {"keep_last": HistoryPolicy.KEEP_LAST, "keep_all": HistoryPolicy.KEEP_ALL}


def make_qos(
    reliability: str = "best_effort",
    durability: str = "volatile",
    history: str = "keep_last",
    depth: int = 1,
) -> QoSProfile:
    """Build a QoS profile from parameter strings; unknown names raise ValueError."""
    try:
        return QoSProfile(
            reliability=RELIABILITY[reliability],
            durability=DURABILITY[durability],
            history=HISTORY[history],
            depth=max(1, int(depth)),
        )
    except KeyError as exc:
        raise ValueError(
            f"unknown QoS setting {exc.args[0]!r}; reliability: {sorted(RELIABILITY)}, "
            f"durability: {sorted(DURABILITY)}, history: {sorted(HISTORY)}"
        ) from None


def describe_qos(qos: QoSProfile) -> str:
    """Short human description used in logs (QoS mismatches are the usual 'no output')."""
    return (
        f"{qos.reliability.name.lower()}/{qos.durability.name.lower()}/"
        f"{qos.history.name.lower()}({qos.depth})"
    )


# ---------------------------------------------------------------- the node's profiles

OVERRIDABLE_POLICIES = (
    QoSPolicyKind.HISTORY,
    QoSPolicyKind.DEPTH,
    QoSPolicyKind.RELIABILITY,
    QoSPolicyKind.DURABILITY,
)
"""Policies a user may override per topic (with_default_policies() plus durability)."""

IMAGE_QOS = make_qos("best_effort", depth=1)
"""Camera images: sensor-data QoS, newest only (best_effort also accepts reliable cameras)."""
SIDE_INPUT_QOS = make_qos("best_effort", depth=10)
"""camera_info, depth and roi: kept a little longer so depth can be matched by stamp."""
OUTPUT_QOS = make_qos("reliable", depth=5)
"""Keypoints, landmarks, markers and debug images."""
LATCHED_QOS = make_qos("reliable", "transient_local", depth=1)
"""~/keypoint_info: late subscribers still get the id -> name table."""


def overriding_options() -> QoSOverridingOptions:
    """rclpy's standard per-topic QoS parameters (``qos_overrides./topic.<kind>.<policy>``)."""
    return QoSOverridingOptions(policy_kinds=OVERRIDABLE_POLICIES)


def override_parameter(topic: str, kind: str, policy: str) -> str:
    """The parameter name rclpy reads: kind is 'publisher' or 'subscription'."""
    return f"qos_overrides.{topic}.{kind}.{policy}"
