"""skp-replay echo-node: a tiny real node answering every image with fixed keypoints.

Why: the player (and a robot's plumbing) needs a smoke-test target that starts in a second,
subscribes and publishes like the keypoint node (same name, topics, QoS parameters and
compressed transport) and copies each image's header into its answer, without a model.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

__all__ = ["ECHO_NODE_NAME", "run_echo_node"]

ECHO_NODE_NAME = "skp_keypoints"  # same name as the real node, so the default topics line up


def run_echo_node(ros_args: list[str], local: bool) -> int:
    """Run the echo node until SIGINT: fixed keypoints on every image, header copied."""
    if local:
        from skp_ros.ros_env import apply_local_ros_env

        domain = os.environ.get("ROS_DOMAIN_ID")
        apply_local_ros_env(int(domain) if domain and domain.isdigit() else None)
    from skp_ros.process import spin_node

    return spin_node(_make_echo_node, ["skp_replay_echo", *ros_args])


def _make_echo_node() -> Any:
    """Build the echo node (defined on demand: `make-bag` and `info` never need rclpy.node)."""
    from rcl_interfaces.msg import ParameterDescriptor
    from rclpy.node import Node
    from sensor_msgs.msg import CompressedImage, Image, PointCloud2

    from skp_ros.image_conversion import ImageConversionError, compressed_msg_to_rgb
    from skp_ros.keypoint_msgs import keypoints_to_cloud
    from skp_ros.qos import describe_qos, make_qos

    class EchoNode(Node):
        """Subscribes to `image` like the keypoint node, publishes `~/keypoints` instantly."""

        def __init__(self) -> None:
            super().__init__(ECHO_NODE_NAME)

            def declare(name: str, default: Any, description: str) -> Any:
                descriptor = ParameterDescriptor(description=description)
                return self.declare_parameter(name, default, descriptor).value

            transport = declare("input_transport", "raw", "'raw' or 'compressed' input.")
            count = declare("num_keypoints", 5, "Keypoints per message, on a fixed circle.")
            in_qos = make_qos(
                declare("input_qos_reliability", "best_effort", "reliable or best_effort."),
                depth=declare("input_qos_depth", 10, "Input queue depth."),
            )
            out_qos = make_qos("reliable", depth=declare("output_qos_depth", 10, "Output depth."))
            angles = 2 * np.pi * np.arange(count) / max(count, 1)
            self.fractions = np.stack([0.5 + 0.3 * np.cos(angles), 0.5 + 0.3 * np.sin(angles)], 1)
            self.ids = np.arange(count, dtype=np.int32)
            self.scores = np.ones(count, dtype=np.float32)
            self.compressed = transport == "compressed"
            # Remap the base name, then add /compressed (image_transport's rule, as the real node).
            base = self.resolve_topic_name("image")
            topic = f"{base}/compressed" if self.compressed else base
            self.publisher = self.create_publisher(PointCloud2, "~/keypoints", out_qos)
            self.subscription = self.create_subscription(
                CompressedImage if self.compressed else Image, topic, self.on_image, in_qos
            )
            self.failures = 0
            self.images = 0
            self.get_logger().info(
                f"echo: {self.subscription.topic_name} ({describe_qos(in_qos)}) -> "
                f"{self.publisher.topic_name} ({describe_qos(out_qos)}), {count} keypoints"
            )

        def on_image(self, msg: Any) -> None:
            self.images += 1
            if self.images == 1:
                self.get_logger().info("first image received")
            if self.compressed:
                try:
                    height, width = compressed_msg_to_rgb(msg).shape[:2]
                except ImageConversionError as exc:
                    self.get_logger().warning(f"undecodable image: {exc}")
                    return
            else:
                height, width = msg.height, msg.width
            uv = (self.fractions * np.array([width, height])).astype(np.float32)
            cloud = keypoints_to_cloud(msg.header, self.ids, uv, self.scores)
            try:
                self.publisher.publish(cloud)
            except Exception as exc:
                self.failures += 1
                self.get_logger().warning(f"publish failed ({self.failures}): {exc}")

    return EchoNode()
