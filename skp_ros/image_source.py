"""A synthetic camera node: publishes a sweep over a real photo (like image_tools' cam2image).

It lets anyone try the keypoint node, and lets the tests drive it, without a camera.
"""

from __future__ import annotations

import sys

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image

from skp_ros.camera_sweep import sample_photo, sweep_frame
from skp_ros.image_conversion import rgb_to_compressed_msg, rgb_to_image_msg
from skp_ros.process import spin_node
from skp_ros.qos import describe_qos, make_qos


class ImageSource(Node):
    """Publishes `~/image` (or the remapped topic) at a fixed rate."""

    def __init__(self) -> None:
        super().__init__("skp_image_source")
        declare = self._declare
        self.topic = declare("topic", "image_raw", "Topic to publish images on.")
        self.rate_hz = declare("rate_hz", 10.0, "Publishing rate in Hz.")
        self.width = declare("width", 640, "Image width in pixels.")
        self.height = declare("height", 480, "Image height in pixels.")
        self.photo_name = declare("photo", "astronaut", "scikit-image sample photo to sweep over.")
        self.encoding = declare("encoding", "rgb8", "rgb8, bgr8 or mono8 (raw images only).")
        self.compressed = declare(
            "compressed", False, "Publish sensor_msgs/CompressedImage (JPEG) on TOPIC/compressed."
        )
        self.frame_id = declare("frame_id", "camera", "frame_id of the published headers.")
        self.num_frames = declare("num_frames", 0, "Stop after this many frames (0: never).")
        qos = make_qos(
            declare("qos_reliability", "best_effort", "reliable or best_effort."),
            declare("qos_durability", "volatile", "volatile or transient_local."),
            declare("qos_history", "keep_last", "keep_last or keep_all."),
            declare("qos_depth", 1, "History depth."),
        )
        self.photo = sample_photo(self.photo_name)
        if self.compressed:
            self.publisher = self.create_publisher(CompressedImage, f"{self.topic}/compressed", qos)
        else:
            self.publisher = self.create_publisher(Image, self.topic, qos)
        self.count = 0
        self.publish_failures = 0
        self.timer = self.create_timer(1.0 / self.rate_hz, self._tick)
        self.get_logger().info(
            f"publishing {self.width}x{self.height} '{self.photo_name}' sweep on "
            f"{self.publisher.topic_name} at {self.rate_hz} Hz, QoS {describe_qos(qos)}"
        )

    def _declare(self, name: str, default, description: str):
        return self.declare_parameter(
            name, default, ParameterDescriptor(description=description)
        ).value

    def _tick(self) -> None:
        if self.num_frames and self.count >= self.num_frames:
            self.timer.cancel()
            return
        rgb = sweep_frame(self.photo, self.count, self.width, self.height)
        if self.compressed:
            msg = rgb_to_compressed_msg(rgb)
        else:
            msg = rgb_to_image_msg(rgb, encoding=self.encoding)
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.header.frame_id = self.frame_id
        try:
            self.publisher.publish(msg)
        except Exception as exc:  # RELIABLE at max rate may fail transiently
            self.publish_failures += 1
            self.get_logger().warning(f"publish failed ({self.publish_failures}): {exc}")
        self.count += 1


def main(args: list[str] | None = None) -> int:
    return spin_node(ImageSource, args if args is not None else sys.argv)


if __name__ == "__main__":
    sys.exit(main())
