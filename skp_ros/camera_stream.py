"""One camera served by the keypoint node: its topics, side inputs, outputs and counters.

A node serves one camera (topics ``image``, ``camera_info``, ``depth``, ``roi``, outputs under
``~/``) or several (``cameras: [front, rear]``: ``front/image`` ... and outputs under
``~/front/``), always with one model. Everything that is per camera lives here: the topic
names (camera_info sits in the image topic's namespace unless remapped, image_transport's
rule), the newest CameraInfo, a short buffer of depth images for matching by stamp, the newest
RegionOfInterest, the publishers, the frame counters and the temporal smoothers.

Callbacks here run on the executor thread and only store; the worker reads under a lock.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from rclpy.event_handler import PublisherEventCallbacks, SubscriptionEventCallbacks
from rclpy.node import Node
from rclpy.publisher import Publisher
from rclpy.qos import QoSProfile
from rclpy.subscription import Subscription
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, RegionOfInterest
from visualization_msgs.msg import MarkerArray

from skp_ros.bag_io import stamp_to_ns
from skp_ros.camera_geometry import CameraGeometryError, CameraModel, side_topics
from skp_ros.diagnostics import FrameStats
from skp_ros.qos import IMAGE_QOS, OUTPUT_QOS, SIDE_INPUT_QOS, overriding_options
from skp_ros.roi import Box, Crop, box_from_msg

__all__ = ["CameraStream", "CameraTopics", "camera_info_topic"]

DEPTH_BUFFER = 30  # depth images kept for matching (1 s at 30 Hz)
DATA_OUTPUTS = ("keypoints", "landmarks", "markers", "debug_image")
"""Outputs whose subscribers make a lazy node subscribe to its inputs."""


def camera_info_topic(node: Node, relative: str, image_topic: str) -> str:
    """``relative`` remapped if the user remapped it, else ``camera_info`` beside the image."""
    remapped = node.resolve_topic_name(relative)
    if remapped != node.resolve_topic_name(relative, only_expand=True):
        return remapped
    return side_topics(image_topic)[0]


@dataclass(frozen=True)
class CameraTopics:
    """The resolved topic names of one camera."""

    name: str  # camera namespace, "" for the single-camera case
    image: str  # base image topic (…/compressed is appended for compressed input)
    camera_info: str
    depth: str
    roi: str
    output_prefix: str  # "~/" or "~/<camera>/"

    @classmethod
    def resolve(cls, node: Node, name: str, image_topic: str) -> CameraTopics:
        """Resolve (and remap) a camera's inputs: ``<name>/image`` etc., or plain names."""
        prefix = f"{name.rstrip('/')}/" if name else ""
        image = node.resolve_topic_name(f"{prefix}{image_topic}")
        return cls(
            name=name,
            image=image,
            camera_info=camera_info_topic(node, f"{prefix}camera_info", image),
            depth=node.resolve_topic_name(f"{prefix}depth"),
            roi=node.resolve_topic_name(f"{prefix}roi"),
            output_prefix=f"~/{name.strip('/')}/" if name else "~/",
        )

    @property
    def label(self) -> str:
        """How logs and diagnostics name this camera."""
        return self.name or self.image


@dataclass
class _SideInputs:
    """Latest camera_info (as a model or the reason it is unusable), depth buffer, ROI."""

    camera: CameraModel | None = None
    camera_problem: str = ""
    depth: deque = field(default_factory=lambda: deque(maxlen=DEPTH_BUFFER))
    roi: Box | None = None
    roi_seen: bool = False


class CameraStream:
    """Topics, caches, counters and smoothers of one camera (see the module docstring)."""

    def __init__(self, topics: CameraTopics) -> None:
        self.topics = topics
        self.stats = FrameStats()
        self.stamp_counts = {"early": 0, "late": 0, "zero": 0}
        self.publishers: dict[str, Publisher] = {}
        self.subscriptions: list[Subscription] = []
        self.matched: dict[str, int] = {}
        self.input_topic = ""
        self.smoothers: Any = None  # [keypoints, landmarks, last (size, crop)], set by the node
        self.geometry: Any = None  # the last frame's FrameGeometry, for diagnostics
        self._lock = threading.Lock()
        self._side = _SideInputs(camera_problem=f"no camera_info received on {topics.camera_info}")

    # ------------------------------------------------------------------ publishers

    def create_publishers(
        self,
        node: Node,
        with_landmarks: bool,
        on_matched: Callable[[], None],
        on_incompatible: Callable[[str, QoSProfile, Any], None],
    ) -> None:
        """Create this camera's outputs; subscriber counts follow the matched events."""
        outputs: list[tuple[str, type]] = [
            ("keypoints", PointCloud2),
            ("markers", MarkerArray),
            ("debug_image", Image),
        ]
        if with_landmarks:
            outputs.insert(1, ("landmarks", PointCloud2))
        for name, msg_type in outputs:
            topic = node.resolve_topic_name(f"{self.topics.output_prefix}{name}")
            self.matched[name] = 0

            def matched(info: Any, output: str = name) -> None:
                self.matched[output] = int(info.current_count)
                on_matched()

            events = PublisherEventCallbacks(
                matched=matched,
                incompatible_qos=lambda event, t=topic: on_incompatible(t, OUTPUT_QOS, event),
            )
            self.publishers[name] = node.create_publisher(
                msg_type,
                topic,
                OUTPUT_QOS,
                event_callbacks=events,
                qos_overriding_options=overriding_options(),
            )

    def destroy_publishers(self, node: Node) -> None:
        """Destroy every output of this camera."""
        for publisher in self.publishers.values():
            node.destroy_publisher(publisher)
        self.publishers = {}
        self.matched = {}

    def wanted(self) -> bool:
        """True when a data output has a subscriber (what a lazy node subscribes for)."""
        return any(self.matched.get(name, 0) > 0 for name in DATA_OUTPUTS)

    # ------------------------------------------------------------------ subscriptions

    def subscribe(
        self,
        node: Node,
        compressed: bool,
        use_depth: bool,
        use_roi: bool,
        on_image: Callable[[CameraStream, Any], None],
        on_incompatible: Callable[[CameraStream, Any], None],
    ) -> list[str]:
        """Subscribe to the image and its side inputs; returns 'topic (type)' lines for the log."""
        topics = self.topics
        self.input_topic = f"{topics.image}/compressed" if compressed else topics.image
        events = SubscriptionEventCallbacks(incompatible_qos=lambda e: on_incompatible(self, e))
        self.subscriptions.append(
            node.create_subscription(
                CompressedImage if compressed else Image,
                self.input_topic,
                lambda msg: on_image(self, msg),
                IMAGE_QOS,
                event_callbacks=events,
                qos_overriding_options=overriding_options(),
            )
        )
        kind = "CompressedImage" if compressed else "Image"
        lines = [f"{self.input_topic} ({kind})"]
        side: list[tuple[type, str, Callable[[Any], None]]] = [
            (CameraInfo, topics.camera_info, self._on_camera_info)
        ]
        if use_depth:
            side.append((Image, topics.depth, self._on_depth))
        if use_roi:
            side.append((RegionOfInterest, topics.roi, self._on_roi))
        for msg_type, topic, callback in side:
            self.subscriptions.append(
                node.create_subscription(
                    msg_type,
                    topic,
                    callback,
                    SIDE_INPUT_QOS,
                    qos_overriding_options=overriding_options(),
                )
            )
            lines.append(f"{topic} ({msg_type.__name__})")
        return lines

    def unsubscribe(self, node: Node) -> None:
        """Drop every subscription of this camera (the cached side inputs stay)."""
        for subscription in self.subscriptions:
            node.destroy_subscription(subscription)
        self.subscriptions = []

    @property
    def subscribed(self) -> bool:
        """True while this camera's image subscription exists."""
        return bool(self.subscriptions)

    def _on_camera_info(self, msg: CameraInfo) -> None:
        try:
            model, problem = CameraModel.from_msg(msg), ""
        except CameraGeometryError as exc:
            model, problem = None, f"unusable camera_info on {self.topics.camera_info}: {exc}"
        with self._lock:
            self._side.camera, self._side.camera_problem = model, problem

    def _on_depth(self, msg: Image) -> None:
        with self._lock:
            self._side.depth.append((stamp_to_ns(msg.header.stamp), msg))

    def _on_roi(self, msg: RegionOfInterest) -> None:
        with self._lock:
            self._side.roi, self._side.roi_seen = box_from_msg(msg), True

    # ------------------------------------------------------------------ worker side

    def reset_smoothers(self, runtime: dict[str, Any]) -> None:
        """New temporal filters from the node's smoothing parameters."""
        from skp_core.smoothing import make_smoother

        options = {
            "min_cutoff": runtime["smoothing_min_cutoff"],
            "beta": runtime["smoothing_beta"],
            "d_cutoff": runtime["smoothing_d_cutoff"],
        }
        kind = runtime["smoothing"]
        self.smoothers = [make_smoother(kind, **options), make_smoother(kind, **options), None]

    def smooth(
        self, stamp: float, detection: Any, crop: Crop, image_size: tuple[int, int]
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Keypoints and landmarks [n, K, 2] of every instance in full-image pixels, filtered.

        Identity when smoothing is off. Instances are numbered left to right, so instance i's
        keypoint k is filtered as one stream; a new image size or crop restarts the filters.
        """
        keypoint_filter, landmark_filter, last = self.smoothers
        if (image_size, crop) != last:
            keypoint_filter.reset()
            landmark_filter.reset()
            self.smoothers[2] = (image_size, crop)
        instances = detection.instances
        pixels = crop.to_full(np.stack([instance.pixels for instance in instances]))
        uv = keypoint_filter(stamp, pixels.reshape(-1, 2)).reshape(pixels.shape)
        landmarks = None
        if detection.landmarks_pixels is not None:
            stacked = crop.to_full(np.stack([i.landmarks_pixels for i in instances]))
            landmarks = landmark_filter(stamp, stacked.reshape(-1, 2)).reshape(stacked.shape)
        return uv, landmarks

    def camera(self) -> tuple[CameraModel | None, str]:
        """The newest usable camera model, or None and why there is none."""
        with self._lock:
            return self._side.camera, self._side.camera_problem

    def roi(self, static: Box | None) -> Box | None:
        """The region to crop to: the newest roi message if one came, else the static one."""
        with self._lock:
            return self._side.roi if self._side.roi_seen else static

    def depth_for(self, stamp_ns: int, tolerance_s: float) -> tuple[Image | None, str]:
        """The buffered depth image nearest in stamp, if within tolerance; else why not."""
        with self._lock:
            buffered = list(self._side.depth)
        if not buffered:
            return None, f"no depth image received on {self.topics.depth}"
        nearest_ns, msg = min(buffered, key=lambda item: abs(item[0] - stamp_ns))
        gap_s = abs(nearest_ns - stamp_ns) * 1e-9
        if gap_s > tolerance_s:
            return None, (
                f"no depth image within depth_stamp_tolerance {tolerance_s:g} s of the image "
                f"(nearest {gap_s:.3f} s away)"
            )
        return msg, ""
