"""The ROS 2 keypoint node: camera images in, StableKeypoints out.

A thin adapter over :class:`skp_core.detector.KeypointDetector`: it holds no method logic, only
message conversion, threading, lifecycle and bookkeeping.

Lifecycle (``rclpy.lifecycle``, node name ``skp_keypoints``):

* ``configure`` validates every parameter, loads the bundle and the backbone (and runs one
  warm-up inference so CUDA/dtype problems show up now, not on the first frame), creates the
  publishers and publishes the latched ``~/keypoint_info``. A missing bundle, missing weights,
  a bundle/backbone mismatch or an explicitly requested but absent CUDA device fail the
  transition with one clear ERROR line (``device: auto`` falls back to the CPU with a WARN).
* ``activate`` starts the worker thread and subscribes to the inputs; ``deactivate`` undoes
  that; ``cleanup`` frees the model and the publishers. ``~/enable`` (std_srvs/SetBool)
  pauses and resumes processing without unloading the model.
* ``main`` (the ``keypoint_node`` executable) configures and activates the node itself when
  ``autostart`` is true (the default) so ``ros2 run``/``ros2 launch`` work without a lifecycle
  manager. If that fails it logs why and exits with code 1, so ``ros2 launch`` reports the
  dead process instead of leaving a silent, unconfigured node. With ``autostart:=false`` the
  node waits, unconfigured, for a lifecycle manager. SIGINT / shutdown exit with code 0.

Cameras: one (topics ``image``, ``camera_info``, ``depth``, ``roi``) or several (``cameras``),
always one model: the newest frame of every camera goes through one batched detector call,
and each camera's outputs carry its own header (see :mod:`skp_ros.camera_stream`).

Threading: image callbacks only store the newest message per camera and wake the worker; the
model never runs in a callback. A message replaced before the worker took it counts as
dropped. A frame that cannot be decoded or detected is counted, logged (throttled) and
skipped; the node never dies from one bad frame.
"""

from __future__ import annotations

import gc
import json
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import Node as LifecycleNode
from rclpy.lifecycle import State, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.publisher import Publisher
from rclpy.qos import QoSProfile
from rclpy.service import Service
from rclpy.timer import Timer
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header, String
from std_srvs.srv import SetBool

from skp_ros.bag_io import stamp_to_ns
from skp_ros.camera_stream import CameraStream, CameraTopics
from skp_ros.detector_loading import ConfigureError, LoadedDetector, load_detector
from skp_ros.image_conversion import (
    ImageConversionError,
    compressed_msg_to_rgb,
    image_msg_to_rgb,
    rgb_to_image_msg,
)
from skp_ros.keypoint_info import keypoint_info
from skp_ros.keypoint_outputs import build_messages, debug_overlay, frame_geometry
from skp_ros.latest_frames import LatestFrames
from skp_ros.node_diagnostics import camera_status
from skp_ros.parameters import (
    PARAMETERS,
    RUNTIME_PARAMETERS,
    SPECS,
    NodeSettings,
    check_value,
    descriptor,
)
from skp_ros.process import node_usage, wants_help
from skp_ros.qos import LATCHED_QOS, describe_qos, overriding_options
from skp_ros.roi import Crop, crop_for, static_box

NODE_NAME = "skp_keypoints"
BAD_FRAME_LOG_PERIOD_S = 2.0
WORKER_JOIN_TIMEOUT_S = 60.0
_SMOOTHING = {"smoothing", "smoothing_min_cutoff", "smoothing_beta", "smoothing_d_cutoff"}

__all__ = ["NODE_NAME", "KeypointNode", "main"]


@dataclass
class _Frame:
    """One camera's decoded frame on its way through the batched detector call."""

    stream: CameraStream
    header: Header
    rgb: np.ndarray
    crop: Crop
    start: float


def _policy_name(kind: Any) -> str:
    """'RELIABILITY' from rmw_qos_policy_kind_t.RMW_QOS_POLICY_RELIABILITY (or a QoSPolicyKind)."""
    name = getattr(kind, "name", str(kind))
    return name.rsplit(".", 1)[-1].removeprefix("RMW_QOS_POLICY_")


def _describe_offer(qos: QoSProfile) -> str:
    """Reliability/durability of a discovered endpoint (its history/depth are not reported)."""
    return f"{qos.reliability.name.lower()}/{qos.durability.name.lower()}"


def _settled(name: str, value: Any) -> Any:
    """Array parameters as lists (rclpy may hand back array.array), the rest as they are."""
    return list(value) if isinstance(SPECS[name].default, list) else value


def _stamp_seconds(header: Header) -> float:
    return header.stamp.sec + header.stamp.nanosec * 1e-9


class KeypointNode(LifecycleNode):
    """Lifecycle node publishing keypoints of the latest camera images (see module docstring)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        for spec in PARAMETERS:
            default = Parameter.Type.STRING_ARRAY if spec.unset_when_empty else spec.default
            self.declare_parameter(spec.name, default, descriptor(spec))
        # Registered after declaration: initial values are validated on configure, where a
        # bad value fails the transition with a message instead of killing the constructor.
        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)
        self._runtime: dict[str, Any] = {name: self._value(name) for name in RUNTIME_PARAMETERS}

        self._state = "unconfigured"
        self._enabled = True
        self._settings: NodeSettings | None = None
        self._loaded: LoadedDetector | None = None
        self._model_lock = threading.Lock()
        self._streams: list[CameraStream] = []

        self._frames = LatestFrames()
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None

        self._info_publisher: Publisher | None = None
        self._diag_publisher: Publisher | None = None
        self._diag_timer: Timer | None = None
        self._enable_service: Service | None = None
        self._smoother_lock = threading.Lock()

    # ------------------------------------------------------------------ parameters

    def _value(self, name: str) -> Any:
        """A parameter's value; an array declared unset (``cameras`` by default) reads as []."""
        try:
            return _settled(name, self.get_parameter(name).value)
        except rclpy.exceptions.ParameterUninitializedException:
            return []

    def _validate_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """Reject bad values, and configure-time values while configured, with a reason."""
        for param in params:
            if param.name not in SPECS:
                continue  # e.g. use_sim_time, qos_overrides.*: not ours to judge
            problem = check_value(param.name, param.value)
            if problem is not None:
                return SetParametersResult(successful=False, reason=problem)
            locked = param.name not in RUNTIME_PARAMETERS and self._state != "unconfigured"
            if locked and param.value != self._value(param.name):
                return SetParametersResult(
                    successful=False,
                    reason=(
                        f"parameter {param.name!r} is read on configure and the node is "
                        f"{self._state}: deactivate and clean up the node, set it, then "
                        f"configure again"
                    ),
                )
        return SetParametersResult(successful=True)

    def _apply_parameters(self, params: list[Parameter]) -> None:
        """Runtime parameters take effect from the next frame."""
        changed = {p.name for p in params if p.name in RUNTIME_PARAMETERS}
        for param in params:
            if param.name in changed:
                self._runtime[param.name] = _settled(param.name, param.value)
        if changed & _SMOOTHING:
            self._reset_smoothers()
        if "diagnostics_period" in changed and self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = self.create_timer(
                self._runtime["diagnostics_period"], self._publish_diagnostics
            )
        if "lazy" in changed:
            self._update_subscriptions()

    def _read_settings(self) -> NodeSettings:
        values = {spec.name: self._value(spec.name) for spec in PARAMETERS}
        try:
            return NodeSettings.from_values(values)
        except ValueError as exc:
            raise ConfigureError(f"invalid parameters: {exc}") from None

    # ------------------------------------------------------------------ lifecycle

    def on_configure(self, state: State) -> TransitionCallbackReturn:
        try:
            settings = self._read_settings()
            self._settings = settings
            loaded = load_detector(settings)
            with self._model_lock:
                self._loaded = loaded
            if loaded.device_warning:
                self.get_logger().warning(loaded.device_warning)
            self._create_outputs(settings)
            self._reset_smoothers()
            self._publish(self._info_publisher, self._info_message(), "keypoint_info")
            self._diag_timer = self.create_timer(
                self._runtime["diagnostics_period"], self._publish_diagnostics
            )
        except ConfigureError as exc:
            self.get_logger().error(f"configure failed: {exc}")
            self._release()
            return TransitionCallbackReturn.FAILURE
        except Exception as exc:  # anything else still fails the transition, with its type
            self.get_logger().error(f"configure failed unexpectedly: {type(exc).__name__}: {exc}")
            self._release()
            return TransitionCallbackReturn.FAILURE
        self._state = "inactive"
        bundle = loaded.bundle
        landmarks = "" if bundle.regressor is None else f", {bundle.num_landmarks} landmarks"
        cameras = ", ".join(stream.topics.label for stream in self._streams)
        self.get_logger().info(
            f"configured: bundle {settings.bundle} ({bundle.num_keypoints} keypoints"
            f"{landmarks}), backbone {loaded.model_id!r} on {loaded.device}/{loaded.dtype}, "
            f"{loaded.detector.num_views} views, {settings.readout} read-out, "
            f"camera(s): {cameras}"
        )
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        try:
            self._stop.clear()
            self._frames.clear()
            self._reset_smoothers()
            self._worker = threading.Thread(target=self._work, name="skp_worker", daemon=True)
            self._worker.start()
            self._state = "active"
            for stream in self._streams:
                stream.stats.restart_input_clock()
            self._update_subscriptions()
        except Exception as exc:
            self.get_logger().error(f"activate failed: {type(exc).__name__}: {exc}")
            self._deactivate()
            return TransitionCallbackReturn.FAILURE
        self.get_logger().info("activated")
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        self._deactivate()
        self.get_logger().info("inactive")
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        self._release()
        self.get_logger().info("cleaned up: model and publishers released")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        self.release_all()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: State) -> TransitionCallbackReturn:
        self.get_logger().error("error during a transition: releasing everything")
        self.release_all()
        return TransitionCallbackReturn.SUCCESS

    def autostart(self) -> bool:
        """Configure and activate (the executable's default); False, with the reason, on failure."""
        hint = (
            "fix the parameters (see the error above), or start with autostart:=false to keep "
            "the node alive unconfigured for a lifecycle manager"
        )
        if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            self.get_logger().fatal(f"autostart: configure failed; exiting with code 1: {hint}")
            return False
        if self.trigger_activate() != TransitionCallbackReturn.SUCCESS:
            self.get_logger().fatal(f"autostart: activate failed; exiting with code 1: {hint}")
            return False
        return True

    def release_all(self) -> None:
        """Stop the worker and free everything, from any state (shutdown, errors, exit)."""
        self._deactivate()
        self._release()

    def _deactivate(self) -> None:
        self._state = "inactive" if self._loaded is not None else "unconfigured"
        for stream in self._streams:
            stream.unsubscribe(self)
        self._stop_worker()

    def _stop_worker(self) -> None:
        worker, self._worker = self._worker, None
        if worker is None:
            return
        self._stop.set()
        self._frames.wake()
        worker.join(WORKER_JOIN_TIMEOUT_S)
        if worker.is_alive():
            self.get_logger().warning(
                f"the worker did not finish its frame within {WORKER_JOIN_TIMEOUT_S:.0f} s; "
                "it will discard its result"
            )
        self._frames.clear()

    def _release(self) -> None:
        self._state = "unconfigured"
        if self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = None
        for stream in self._streams:
            stream.unsubscribe(self)
            stream.destroy_publishers(self)
        self._streams = []
        for attr in ("_info_publisher", "_diag_publisher"):
            publisher = getattr(self, attr)
            if publisher is not None:
                self.destroy_publisher(publisher)
                setattr(self, attr, None)
        if self._enable_service is not None:
            self.destroy_service(self._enable_service)
            self._enable_service = None
        with self._model_lock:
            loaded, self._loaded = self._loaded, None
        if loaded is not None:
            try:
                loaded.detector.close()
            except Exception as exc:
                self.get_logger().warning(f"closing the detector failed: {exc}")
            del loaded
            gc.collect()
            torch = sys.modules.get("torch")
            if torch is not None and torch.cuda.is_available():
                torch.cuda.empty_cache()

    # ------------------------------------------------------------------ topics

    def _create_outputs(self, settings: NodeSettings) -> None:
        """Per-camera streams and outputs, the latched info, diagnostics and ~/enable."""
        names = settings.cameras or ("",)
        self._streams = [
            CameraStream(CameraTopics.resolve(self, name, settings.image_topic)) for name in names
        ]
        with_landmarks = self._loaded is not None and self._loaded.bundle.regressor is not None
        for stream in self._streams:
            stream.create_publishers(
                self, with_landmarks, self._update_subscriptions, self._on_output_qos
            )
        self._info_publisher = self.create_publisher(
            String, "~/keypoint_info", LATCHED_QOS, qos_overriding_options=overriding_options()
        )
        self._diag_publisher = self.create_publisher(
            DiagnosticArray, "/diagnostics", 10, qos_overriding_options=overriding_options()
        )
        self._enable_service = self.create_service(SetBool, "~/enable", self._on_enable)

    def _update_subscriptions(self) -> None:
        """Subscribe while active and enabled (and, if lazy, while a data output is matched)."""
        settings = self._settings
        if settings is None:
            return
        for stream in self._streams:
            wanted = (
                self._state == "active"
                and self._enabled
                and (not self._runtime["lazy"] or stream.wanted())
            )
            if wanted and not stream.subscribed:
                lines = stream.subscribe(
                    self,
                    settings.input_transport == "compressed",
                    settings.use_depth,
                    settings.use_roi_topic,
                    self._on_image,
                    self._on_input_qos,
                )
                stream.stats.restart_input_clock()
                self.get_logger().info(f"subscribed to {', '.join(lines)}")
            elif not wanted and stream.subscribed:
                stream.unsubscribe(self)
                if self._state == "active" and self._enabled:
                    self.get_logger().info(
                        f"lazy: no subscribers left, unsubscribed from {stream.input_topic}"
                    )

    def _on_enable(self, request: SetBool.Request, response: SetBool.Response) -> Any:
        """~/enable: pause (unsubscribe, keep the model) or resume processing."""
        was = self._enabled
        self._enabled = bool(request.data)
        if not self._enabled:
            self._frames.clear()
        self._update_subscriptions()
        word = "enabled" if self._enabled else "paused"
        response.success = True
        response.message = f"{word} (was {'enabled' if was else 'paused'}); the model stays loaded"
        self.get_logger().info(f"~/enable: {response.message}")
        return response

    def _on_input_qos(self, stream: CameraStream, event: Any) -> None:
        """A camera whose QoS cannot talk to our subscription: say exactly what to change."""
        topic = stream.input_topic
        try:
            offered = sorted(
                {_describe_offer(i.qos_profile) for i in self.get_publishers_info_by_topic(topic)}
            )
        except Exception:
            offered = []
        self.get_logger().warning(
            f"QoS mismatch on input {topic}: a publisher is incompatible with this "
            f"subscription in policy {_policy_name(event.last_policy_kind)} "
            f"({event.total_count} incompatible so far), so its images will NOT arrive. "
            f"Publishers offer: {', '.join(offered) or 'unknown'}. Override the subscription's "
            f"QoS at start-up, e.g. -p qos_overrides.{topic}.subscription.reliability:="
            f"best_effort (or reliable / durability:=transient_local to match)."
        )

    def _on_output_qos(self, topic: str, qos: QoSProfile, event: Any) -> None:
        self.get_logger().warning(
            f"QoS mismatch on output {topic}: a subscriber requests QoS that this publisher "
            f"({describe_qos(qos)}) cannot offer, policy {_policy_name(event.last_policy_kind)}; "
            f"it will receive nothing. Change the subscriber, or start the node with "
            f"-p qos_overrides.{topic}.publisher.<policy>:=<value>."
        )

    def _on_image(self, stream: CameraStream, msg: Image | CompressedImage) -> None:
        """Executor thread: only store the newest frame; the worker does the work."""
        if self._state != "active" or not self._enabled:
            return
        stream.stats.arrived()
        if self._frames.put(stream, msg):
            stream.stats.count("dropped")

    # ------------------------------------------------------------------ worker

    def _work(self) -> None:
        while not self._stop.is_set():
            messages = self._frames.take_all(timeout=0.25)
            if not messages or self._stop.is_set():
                continue
            try:
                self._process(messages)
            except Exception as exc:  # last resort: the worker must outlive any frame
                for stream in messages:
                    stream.stats.count("bad")
                self.get_logger().error(
                    f"unexpected error on a frame, skipped: {type(exc).__name__}: {exc}",
                    throttle_duration_sec=BAD_FRAME_LOG_PERIOD_S,
                )

    def _decode(self, stream: CameraStream, msg: Image | CompressedImage) -> _Frame | None:
        """Decode and crop one camera's frame; None (counted) if bad or outside the ROI."""
        start = time.perf_counter()
        try:
            if isinstance(msg, CompressedImage):
                rgb = compressed_msg_to_rgb(msg)
            else:
                rgb = image_msg_to_rgb(msg)
        except ImageConversionError as exc:
            stream.stats.count("bad")
            self.get_logger().warning(
                f"skipped a bad image on {stream.input_topic}: {exc}",
                throttle_duration_sec=BAD_FRAME_LOG_PERIOD_S,
            )
            return None
        box = stream.roi(static_box(self._runtime["roi"]))
        crop = crop_for(box, self._runtime["roi_margin"], rgb.shape[1], rgb.shape[0])
        if crop is None:
            stream.stats.count("outside_roi")  # an empty ROI: no object, nothing to publish
            return None
        return _Frame(stream, msg.header, rgb, crop, start)

    def _process(self, messages: dict[CameraStream, Image | CompressedImage]) -> None:
        frames = [f for s, m in messages.items() if (f := self._decode(s, m)) is not None]
        if not frames:
            return
        with_maps = bool(self._runtime["debug_heatmap"]) and any(
            f.stream.matched.get("debug_image", 0) > 0 for f in frames
        )
        try:
            with self._model_lock:
                if self._loaded is None:
                    return
                detector = self._loaded.detector
                detect_start = time.perf_counter()
                detections = detector.detect(
                    [f.crop.apply(f.rgb) for f in frames], return_maps=with_maps
                )
                detect_s = time.perf_counter() - detect_start
                bundle = self._loaded.bundle
        except Exception as exc:
            for frame in frames:
                frame.stream.stats.count("bad")
            sizes = ", ".join(f"{f.rgb.shape[1]}x{f.rgb.shape[0]}" for f in frames)
            self.get_logger().warning(
                f"detection failed on a {sizes} frame, skipped: {type(exc).__name__}: {exc}",
                throttle_duration_sec=BAD_FRAME_LOG_PERIOD_S,
            )
            return
        for frame, detection in zip(frames, detections, strict=True):
            if self._stop.is_set():
                return
            self._publish_frame(frame, detection, bundle, detect_s / len(frames))

    def _publish_frame(self, frame: _Frame, detection: Any, bundle: Any, detect_s: float) -> None:
        stream, header = frame.stream, frame.header
        if detection.degenerate is not None and detection.degenerate.any():
            # Flat or NaN maps have no peak: their "keypoints" would be the image corner with
            # score 0. Say so in the log and diagnostics; publish nothing for the frame.
            stream.stats.count("degenerate")
            flags = zip(bundle.keypoint_names, detection.degenerate, strict=True)
            names = [name for name, bad in flags if bad]
            self.get_logger().warning(
                f"degenerate attention maps (flat or NaN) for keypoints {', '.join(names)}: "
                f"frame not published; check the bundle's context and the backbone weights",
                throttle_duration_sec=BAD_FRAME_LOG_PERIOD_S,
            )
            return
        image_size = frame.rgb.shape[:2]
        uv, landmarks = self._smooth(stream, header, detection, frame.crop, image_size)
        scores = np.stack([instance.scores for instance in detection.instances])  # [n, K]
        runtime = self._runtime
        settings = self._settings
        assert settings is not None
        geometry = frame_geometry(
            stream, header, image_size, settings.use_depth, runtime["depth_stamp_tolerance"]
        )
        stream.geometry = geometry
        messages = build_messages(
            header,
            uv,
            scores,
            landmarks,
            geometry,
            image_size,
            runtime["score_threshold"],
            runtime["depth_window"],
            list(bundle.keypoint_names),
            list(bundle.keypoint_colors),
            runtime["marker_diameter"],
            with_markers=stream.matched.get("markers", 0) > 0,
        )
        publishers = stream.publishers
        self._publish(publishers.get("keypoints"), messages.keypoints, "keypoints", stream)
        if messages.landmarks is not None:
            self._publish(publishers.get("landmarks"), messages.landmarks, "landmarks", stream)
        if messages.markers is not None:
            self._publish(publishers.get("markers"), messages.markers, "markers", stream)
        if stream.matched.get("debug_image", 0) > 0:
            flat_landmarks = None if landmarks is None else landmarks.reshape(-1, 2)
            self._publish_debug(frame, messages.ids, messages.uv, detection, flat_landmarks)
        stamp = stamp_to_ns(header.stamp)
        now = self.get_clock().now().nanoseconds
        stream.stats.published(None if stamp == 0 else (now - stamp) * 1e-9)
        # Reported apart: the model's time, and everything else (the node's overhead).
        overhead_s = time.perf_counter() - frame.start - detect_s
        stream.stats.processed(overhead_s + detect_s, detect_s)

    def _publish_debug(
        self,
        frame: _Frame,
        ids: np.ndarray,
        uv: np.ndarray,
        detection: Any,
        landmarks: np.ndarray | None,
    ) -> None:
        loaded = self._loaded
        if loaded is None:
            return
        overlay = debug_overlay(frame.rgb, frame.crop, ids, uv, detection, landmarks, loaded.bundle)
        stream = frame.stream
        message = rgb_to_image_msg(overlay, frame.header)
        if self._publish(stream.publishers.get("debug_image"), message, "debug_image", stream):
            stream.stats.count("debug_published")

    def _publish(
        self, publisher: Publisher | None, msg: Any, name: str, stream: CameraStream | None = None
    ) -> bool:
        """Publish, counting instead of raising on failure (RELIABLE under load may raise)."""
        if publisher is None:
            return False
        try:
            publisher.publish(msg)
        except Exception as exc:
            if stream is not None:
                stream.stats.count("publish_failures")
            self.get_logger().warning(
                f"publishing on {name} failed: {exc}", throttle_duration_sec=BAD_FRAME_LOG_PERIOD_S
            )
            return False
        return True

    # ------------------------------------------------------------------ smoothing

    def _reset_smoothers(self) -> None:
        with self._smoother_lock:
            for stream in self._streams:
                stream.reset_smoothers(self._runtime)

    def _smooth(
        self,
        stream: CameraStream,
        header: Header,
        detection: Any,
        crop: Crop,
        image_size: tuple[int, int],
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Keypoints and landmarks [n, K, 2] in full-image pixels, filtered over the stamps."""
        stamp = _stamp_seconds(header)
        if stamp == 0.0:  # driver left the stamp empty: the arrival time is the best we have
            stamp = self.get_clock().now().nanoseconds * 1e-9
        with self._smoother_lock:
            return stream.smooth(stamp, detection, crop, image_size)

    # ------------------------------------------------------------------ info and diagnostics

    def _info_message(self) -> String:
        """The latched id -> name/colour table (std_msgs/String holding JSON)."""
        loaded, settings = self._loaded, self._settings
        assert loaded is not None and settings is not None
        topics = {
            stream.topics.name or "": {
                name: publisher.topic_name for name, publisher in stream.publishers.items()
            }
            for stream in self._streams
        }
        info = keypoint_info(
            loaded.bundle, self.get_fully_qualified_name(), settings.bundle, loaded, topics
        )
        return String(data=json.dumps(info))

    def _publish_diagnostics(self) -> None:
        if self._diag_publisher is None:
            return
        msg = DiagnosticArray()
        for stream in self._streams:
            msg.status.append(
                camera_status(
                    self.get_fully_qualified_name(),
                    stream,
                    self._state,
                    self._enabled,
                    self._settings,
                    self._loaded,
                    self._runtime,
                )
            )
        msg.header.stamp = self.get_clock().now().to_msg()
        self._publish(self._diag_publisher, msg, "/diagnostics")


def main(args: list[str] | None = None) -> int:
    """Entry point of the ``keypoint_node`` executable; returns the process exit code."""
    if wants_help(sys.argv if args is None else args):
        specs = ((spec.name, spec.default, spec.description) for spec in PARAMETERS)
        print(node_usage("keypoint_node", __doc__, specs))
        return 0
    rclpy.init(args=args)
    node: KeypointNode | None = None
    executor: SingleThreadedExecutor | None = None
    code = 0
    try:
        node = KeypointNode()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        if node.get_parameter("autostart").value and not node.autostart():
            code = 1
        else:
            executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception as exc:  # e.g. a parameter of the wrong type in the params file
        hint = ""
        if "expecting type 'DOUBLE'" in str(exc):
            hint = " (write floating-point parameters with a decimal point, e.g. 1.0)"
        print(f"[{NODE_NAME}] fatal: {type(exc).__name__}: {exc}{hint}", file=sys.stderr)
        code = 1
    finally:
        if node is not None:
            node.release_all()
            node.destroy_node()
        if executor is not None:
            executor.shutdown()
        rclpy.try_shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
