"""A synthetic camera node: publishes a sweep over a real photo (like image_tools' cam2image).

It lets anyone try the keypoint node, and lets the tests drive it, without a camera. Like a
real camera driver it also publishes ``camera_info`` beside the image topic (an ideal pinhole)
and, with ``depth:=true``, a registered 16UC1 depth image of the photo as a poster in front of
the camera, so the node's 3-D output can be tried too.
"""

from __future__ import annotations

import sys

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from skp_ros.camera_geometry import pinhole_camera_info, side_topics
from skp_ros.camera_sweep import sample_photo, sweep_depth, sweep_frame, sweep_intrinsics
from skp_ros.image_conversion import array_to_image_msg, rgb_to_compressed_msg, rgb_to_image_msg
from skp_ros.process import node_usage, spin_node, wants_help
from skp_ros.qos import describe_qos, make_qos

PARAMETERS: tuple[tuple[str, object, str], ...] = (
    ("topic", "image_raw", "Topic to publish images on."),
    ("rate_hz", 10.0, "Publishing rate in Hz."),
    ("width", 640, "Image width in pixels."),
    ("height", 480, "Image height in pixels."),
    ("photo", "astronaut", "scikit-image sample photo to sweep over."),
    ("encoding", "rgb8", "rgb8, bgr8 or mono8 (raw images only)."),
    ("compressed", False, "Publish sensor_msgs/CompressedImage (JPEG) on TOPIC/compressed."),
    ("frame_id", "camera", "frame_id of the published headers."),
    ("num_frames", 0, "Stop after this many frames (0: never)."),
    ("depth", False, "Also publish a registered 16UC1 depth image (millimetres) on depth_topic."),
    ("depth_topic", "depth/image_raw", "Topic of the depth images."),
    ("qos_reliability", "best_effort", "reliable or best_effort."),
    ("qos_durability", "volatile", "volatile or transient_local."),
    ("qos_history", "keep_last", "keep_last or keep_all."),
    ("qos_depth", 1, "History depth."),
)
"""(name, default, description) of every parameter, for the node and its --help."""


class ImageSource(Node):
    """Publishes `~/image` (or the remapped topic) at a fixed rate."""

    def __init__(self) -> None:
        super().__init__("skp_image_source")
        value = {
            name: self.declare_parameter(
                name, default, ParameterDescriptor(description=description)
            ).value
            for name, default, description in PARAMETERS
        }
        self.topic, self.rate_hz = value["topic"], value["rate_hz"]
        self.width, self.height = value["width"], value["height"]
        self.photo_name, self.encoding = value["photo"], value["encoding"]
        self.compressed, self.frame_id = value["compressed"], value["frame_id"]
        self.num_frames = value["num_frames"]
        qos = make_qos(
            value["qos_reliability"],
            value["qos_durability"],
            value["qos_history"],
            value["qos_depth"],
        )
        self.photo = sample_photo(self.photo_name)
        if self.compressed:
            self.publisher = self.create_publisher(CompressedImage, f"{self.topic}/compressed", qos)
        else:
            self.publisher = self.create_publisher(Image, self.topic, qos)
        info_topic, _ = side_topics(self.publisher.topic_name)
        self.info_publisher = self.create_publisher(CameraInfo, info_topic, qos)
        self.depth_publisher = None
        if value["depth"]:
            self.depth_publisher = self.create_publisher(Image, value["depth_topic"], qos)
        self.intrinsics = sweep_intrinsics(self.width, self.height)
        self.count = 0
        self.publish_failures = 0
        self.timer = self.create_timer(1.0 / self.rate_hz, self._tick)
        self.get_logger().info(
            f"publishing {self.width}x{self.height} '{self.photo_name}' sweep on "
            f"{self.publisher.topic_name} at {self.rate_hz} Hz, QoS {describe_qos(qos)}"
        )

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
        outgoing = [(self.publisher, msg)]
        info = pinhole_camera_info(self.intrinsics, self.width, self.height, msg.header)
        outgoing.append((self.info_publisher, info))
        if self.depth_publisher is not None:
            depth = sweep_depth(self.count, self.width, self.height)
            outgoing.append((self.depth_publisher, array_to_image_msg(depth, "16UC1", msg.header)))
        for publisher, message in outgoing:
            try:
                publisher.publish(message)
            except Exception as exc:  # RELIABLE at max rate may fail transiently
                self.publish_failures += 1
                self.get_logger().warning(f"publish failed ({self.publish_failures}): {exc}")
        self.count += 1


def main(args: list[str] | None = None) -> int:
    argv = list(args if args is not None else sys.argv)
    if wants_help(argv):
        print(node_usage("image_source", __doc__, PARAMETERS))
        return 0
    return spin_node(ImageSource, argv)


if __name__ == "__main__":
    sys.exit(main())
