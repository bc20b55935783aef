"""QoS profiles from declared parameters, so every QoS knob can be set from YAML or the CLI."""

from __future__ import annotations

from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
)

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
