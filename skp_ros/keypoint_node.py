"""The ROS 2 keypoint node: camera images in, StableKeypoints out.

A thin adapter over :class:`skp_core.detector.KeypointDetector`: it holds no method logic, only
message conversion, threading, lifecycle and bookkeeping.

Lifecycle (``rclpy.lifecycle``, node name ``skp_keypoints``):

* ``configure`` validates every parameter, loads the bundle and the backbone (and runs one
  warm-up inference so CUDA/dtype problems show up now, not on the first frame), creates the
  publishers and publishes the latched ``~/keypoint_info``. A missing bundle, missing weights,
  a bundle/backbone mismatch or an absent CUDA device fail the transition with one clear
  ERROR line (CPU fallback only with ``allow_cpu_fallback``).
* ``activate`` starts the worker thread and subscribes to images; ``deactivate`` undoes that;
  ``cleanup`` frees the model and the publishers.
* ``main`` (the ``keypoint_node`` executable) configures and activates the node itself when
  ``autostart`` is true (the default) so ``ros2 run``/``ros2 launch`` work without a lifecycle
  manager. If that fails it logs why and exits with code 1, so ``ros2 launch`` reports the
  dead process instead of leaving a silent, unconfigured node. With ``autostart:=false`` the
  node waits, unconfigured, for a lifecycle manager. SIGINT / shutdown exit with code 0.

Threading: the image callback only stores the newest message in a one-slot mailbox and wakes
the worker; the model never runs in a callback. A message replaced before the worker took it
counts as dropped. A frame that cannot be decoded or detected is counted, logged (throttled)
and skipped; the node never dies from one bad frame.
"""

from __future__ import annotations

import gc
import json
import sys
import threading
import time
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.event_handler import PublisherEventCallbacks, SubscriptionEventCallbacks
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import Node as LifecycleNode
from rclpy.lifecycle import State, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.publisher import Publisher
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.subscription import Subscription
from rclpy.timer import Timer
from sensor_msgs.msg import CompressedImage, Image, PointCloud2
from std_msgs.msg import Header, String

from skp_core.overlay import render_overlay
from skp_ros.diagnostics import FrameStats, build_status
from skp_ros.image_conversion import (
    ImageConversionError,
    compressed_msg_to_rgb,
    image_msg_to_rgb,
    rgb_to_image_msg,
)
from skp_ros.keypoint_msgs import keypoints_to_cloud
from skp_ros.parameters import (
    PARAMETERS,
    RUNTIME_PARAMETERS,
    SPECS,
    NodeSettings,
    check_value,
    descriptor,
)
from skp_ros.process import node_usage, wants_help
from skp_ros.qos import describe_qos, make_qos

NODE_NAME = "skp_keypoints"
INFO_FORMAT = "skp_keypoint_info"
INFO_VERSION = 1
LAZY_CHECK_PERIOD_S = 0.5
BAD_FRAME_LOG_PERIOD_S = 2.0
WORKER_JOIN_TIMEOUT_S = 60.0
# Outputs whose subscribers make a lazy node subscribe to images.
_DATA_OUTPUTS = ("keypoints", "landmarks", "debug_image")

__all__ = ["NODE_NAME", "KeypointNode", "LatestFrame", "main"]


class ConfigureError(RuntimeError):
    """configure cannot succeed; the message says why and what to change."""


class LatestFrame:
    """One-slot mailbox: the newest message wins, so the worker never falls behind a queue."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: Any = None

    def put(self, item: Any) -> bool:
        """Store ``item``; True if it replaced one the worker had not taken (a dropped frame)."""
        with self._cond:
            replaced = self._item is not None
            self._item = item
            self._cond.notify()
        return replaced

    def take(self, timeout: float) -> Any:
        """The newest item, waiting up to ``timeout`` seconds; None if nothing came."""
        with self._cond:
            if self._item is None:
                self._cond.wait(timeout)
            item, self._item = self._item, None
        return item

    def clear(self) -> None:
        with self._cond:
            self._item = None

    def wake(self) -> None:
        """Release a waiting ``take`` early (used when stopping the worker)."""
        with self._cond:
            self._cond.notify_all()


def _policy_name(kind: Any) -> str:
    """'RELIABILITY' from rmw_qos_policy_kind_t.RMW_QOS_POLICY_RELIABILITY (or a QoSPolicyKind)."""
    name = getattr(kind, "name", str(kind))
    return name.rsplit(".", 1)[-1].removeprefix("RMW_QOS_POLICY_")


def _describe_offer(qos: QoSProfile) -> str:
    """Reliability/durability of a discovered endpoint (its history/depth are not reported)."""
    return f"{qos.reliability.name.lower()}/{qos.durability.name.lower()}"


def _stamp_seconds(header: Header) -> float:
    return header.stamp.sec + header.stamp.nanosec * 1e-9


class KeypointNode(LifecycleNode):
    """Lifecycle node publishing keypoints of the latest camera image (see module docstring)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        for spec in PARAMETERS:
            self.declare_parameter(spec.name, spec.default, descriptor(spec))
        # Registered after declaration: initial values are validated on configure, where a
        # bad value fails the transition with a message instead of killing the constructor.
        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)
        self._runtime: dict[str, Any] = {
            name: self.get_parameter(name).value for name in RUNTIME_PARAMETERS
        }

        self.stats = FrameStats()
        self._state = "unconfigured"
        self._settings: NodeSettings | None = None
        self._detector: Any = None  # skp_core.detector.KeypointDetector, imported lazily
        self._bundle: Any = None
        self._model_id = ""
        self._device = ""
        self._dtype = ""
        self._model_lock = threading.Lock()

        self._mailbox = LatestFrame()
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None

        self._publishers_by_name: dict[str, Publisher] = {}
        self._subscription: Subscription | None = None
        self._input_topic = ""
        self._input_qos: QoSProfile | None = None
        self._diag_publisher: Publisher | None = None
        self._diag_timer: Timer | None = None
        self._lazy_timer: Timer | None = None

        self._smoother_lock = threading.Lock()
        self._keypoint_smoother: Any = None
        self._landmark_smoother: Any = None
        self._last_image_size: tuple[int, int] | None = None

    # ------------------------------------------------------------------ parameters

    def _validate_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """Reject bad values, and configure-time values while configured, with a reason."""
        for param in params:
            if param.name not in SPECS:
                continue  # e.g. use_sim_time: not ours to judge
            problem = check_value(param.name, param.value)
            if problem is not None:
                return SetParametersResult(successful=False, reason=problem)
            locked = param.name not in RUNTIME_PARAMETERS and self._state != "unconfigured"
            if locked and param.value != self.get_parameter(param.name).value:
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
                self._runtime[param.name] = param.value
        if changed & {"smoothing", "smoothing_min_cutoff", "smoothing_beta", "smoothing_d_cutoff"}:
            self._reset_smoothers()
        if "diagnostics_period" in changed and self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = self.create_timer(
                self._runtime["diagnostics_period"], self._publish_diagnostics
            )
        if "lazy" in changed:
            self._update_subscription()

    def _read_settings(self) -> NodeSettings:
        values = {spec.name: self.get_parameter(spec.name).value for spec in PARAMETERS}
        try:
            return NodeSettings.from_values(values)
        except ValueError as exc:
            raise ConfigureError(f"invalid parameters: {exc}") from None

    # ------------------------------------------------------------------ lifecycle

    def on_configure(self, state: State) -> TransitionCallbackReturn:
        try:
            settings = self._read_settings()
            self._settings = settings
            self._load_model(settings)
            self._create_publishers(settings)
            self._reset_smoothers()
            self._publish_info()
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
        bundle = self._bundle
        landmarks = "" if bundle.regressor is None else f", {bundle.num_landmarks} landmarks"
        self.get_logger().info(
            f"configured: bundle {settings.bundle} ({bundle.num_keypoints} keypoints"
            f"{landmarks}), backbone {self._model_id!r} on {self._device}/{self._dtype}, "
            f"{self._detector.num_views} views, {settings.readout} read-out"
        )
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        try:
            self._stop.clear()
            self._mailbox.clear()
            self._reset_smoothers()
            self._worker = threading.Thread(target=self._work, name="skp_worker", daemon=True)
            self._worker.start()
            self._state = "active"
            self._update_subscription()
            self._lazy_timer = self.create_timer(LAZY_CHECK_PERIOD_S, self._update_subscription)
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
        self._state = "inactive" if self._detector is not None else "unconfigured"
        if self._lazy_timer is not None:
            self.destroy_timer(self._lazy_timer)
            self._lazy_timer = None
        self._unsubscribe()
        self._stop_worker()

    def _stop_worker(self) -> None:
        worker, self._worker = self._worker, None
        if worker is None:
            return
        self._stop.set()
        self._mailbox.wake()
        worker.join(WORKER_JOIN_TIMEOUT_S)
        if worker.is_alive():
            self.get_logger().warning(
                f"the worker did not finish its frame within {WORKER_JOIN_TIMEOUT_S:.0f} s; "
                "it will discard its result"
            )
        self._mailbox.clear()

    def _release(self) -> None:
        self._state = "unconfigured"
        if self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = None
        for publisher in self._publishers_by_name.values():
            self.destroy_publisher(publisher)
        self._publishers_by_name = {}
        if self._diag_publisher is not None:
            self.destroy_publisher(self._diag_publisher)
            self._diag_publisher = None
        with self._model_lock:
            detector, self._detector = self._detector, None
            self._bundle = None
        if detector is not None:
            try:
                detector.close()
            except Exception as exc:
                self.get_logger().warning(f"closing the detector failed: {exc}")
            del detector
            gc.collect()
            torch = sys.modules.get("torch")
            if torch is not None and torch.cuda.is_available():
                torch.cuda.empty_cache()

    # ------------------------------------------------------------------ model

    def _resolve_device(self, settings: NodeSettings) -> tuple[str, str]:
        """The device and dtype to load on; CUDA absent fails unless CPU fallback is allowed."""
        import torch

        device, dtype = settings.device, settings.dtype
        if not device.startswith("cuda"):
            return device, dtype
        index = int(device.partition(":")[2] or 0)
        if not torch.cuda.is_available():
            why = "CUDA is not available (no GPU, no driver, or a CPU-only torch build)"
        elif index >= torch.cuda.device_count():
            why = f"only {torch.cuda.device_count()} CUDA device(s) exist"
        else:
            return device, dtype
        if not settings.allow_cpu_fallback:
            raise ConfigureError(
                f"device {device!r} was requested but {why}; set device:=cpu, or "
                f"allow_cpu_fallback:=true to fall back to the CPU"
            )
        self.get_logger().warning(
            f"device {device!r} was requested but {why}: running on the CPU because "
            f"allow_cpu_fallback is true (expect much slower processing)"
        )
        if dtype != "float32":
            self.get_logger().warning(f"dtype {dtype} is not meant for the CPU: using float32")
        return "cpu", "float32"

    def _load_model(self, settings: NodeSettings) -> None:
        """Bundle, then backbone, then detector, each failure with its own clear message."""
        from skp_core.backbone import BackboneError, load_backbone
        from skp_core.bundle import BundleError, load_bundle
        from skp_core.detector import KeypointDetector

        if not settings.bundle:
            raise ConfigureError(
                "parameter 'bundle' is empty: set it to the bundle directory written by skp-train"
            )
        device, dtype = self._resolve_device(settings)
        try:
            bundle = load_bundle(settings.bundle)
        except BundleError as exc:
            raise ConfigureError(f"cannot load the bundle: {exc}") from None
        model = settings.model or bundle.backbone.get("model")
        if not model:
            raise ConfigureError(
                f"bundle {settings.bundle} names no backbone: set the 'model' parameter"
            )
        # The built-in random models are identified by their seed; use the bundle's.
        fingerprint = bundle.backbone.get("fingerprint") or {}
        seed = fingerprint.get("seed")
        backbone_seed = seed if isinstance(seed, int) and not settings.model else 0
        try:
            backbone = load_backbone(
                model,
                device=device,
                dtype=dtype,
                seed=backbone_seed,
                allow_download=settings.allow_download,
            )
        except BackboneError as exc:
            raise ConfigureError(f"cannot load the backbone {model!r}: {exc}") from None
        try:
            detector = KeypointDetector(
                backbone,
                bundle,
                num_views=settings.num_views or None,
                include_identity=settings.include_identity_view,
                view_space=settings.view_space or None,
                max_batch=settings.max_batch or None,
                readout=None if settings.readout == "bundle" else settings.readout,
                seed=settings.seed,
                num_subjects=settings.num_subjects or None,
            )
        except BundleError as exc:
            raise ConfigureError(
                f"bundle {settings.bundle} does not fit backbone {model!r}: {exc}"
            ) from None
        except ValueError as exc:
            raise ConfigureError(f"cannot build the detector: {exc}") from None
        try:
            # One small warm-up frame: CUDA, memory and dtype problems fail configure now,
            # and the first real frame is not slowed down by lazy initialisation.
            detector.detect(np.full((64, 64, 3), 127, dtype=np.uint8))
        except Exception as exc:
            detector.close()
            raise ConfigureError(
                f"warm-up inference on {device}/{dtype} failed: {type(exc).__name__}: {exc}"
            ) from None
        with self._model_lock:
            self._detector, self._bundle = detector, bundle
        self._model_id, self._device, self._dtype = str(model), device, dtype

    # ------------------------------------------------------------------ topics

    def _create_publishers(self, settings: NodeSettings) -> None:
        qos = make_qos(
            settings.output_qos_reliability,
            settings.output_qos_durability,
            settings.output_qos_history,
            settings.output_qos_depth,
        )
        outputs: list[tuple[str, type]] = [("keypoints", PointCloud2), ("debug_image", Image)]
        if self._bundle.regressor is not None:
            outputs.insert(1, ("landmarks", PointCloud2))
        for name, msg_type in outputs:
            topic = self.resolve_topic_name(f"~/{name}")
            events = PublisherEventCallbacks(
                incompatible_qos=lambda event, t=topic, q=qos: self._on_output_qos(t, q, event)
            )
            self._publishers_by_name[name] = self.create_publisher(
                msg_type, topic, qos, event_callbacks=events
            )
        latched = QoSProfile(
            depth=1,
            reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL,
        )
        self._publishers_by_name["keypoint_info"] = self.create_publisher(
            String, "~/keypoint_info", latched
        )
        self._diag_publisher = self.create_publisher(DiagnosticArray, "/diagnostics", 10)

    def _subscribe(self) -> None:
        settings = self._settings
        assert settings is not None
        # Resolve (and remap) the base name first, then append /compressed: image_transport's
        # rule, so `-r image:=/camera/image_raw` also moves the compressed topic.
        base = self.resolve_topic_name(settings.image_topic)
        compressed = settings.input_transport == "compressed"
        topic = f"{base}/compressed" if compressed else base
        qos = make_qos(
            settings.input_qos_reliability,
            settings.input_qos_durability,
            settings.input_qos_history,
            settings.input_qos_depth,
        )
        events = SubscriptionEventCallbacks(incompatible_qos=self._on_input_qos)
        self._input_topic, self._input_qos = topic, qos
        self._subscription = self.create_subscription(
            CompressedImage if compressed else Image,
            topic,
            self._on_image,
            qos,
            event_callbacks=events,
        )
        kind = "sensor_msgs/CompressedImage" if compressed else "sensor_msgs/Image"
        self.get_logger().info(f"subscribed to {topic} ({kind}), QoS {describe_qos(qos)}")

    def _unsubscribe(self) -> None:
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            self.destroy_subscription(subscription)

    def _update_subscription(self) -> None:
        """Subscribe while active (and, if lazy, only while a data output has a subscriber)."""
        if self._state != "active":
            return
        wanted = not self._runtime["lazy"] or any(
            self._publishers_by_name[name].get_subscription_count() > 0
            for name in _DATA_OUTPUTS
            if name in self._publishers_by_name
        )
        if wanted and self._subscription is None:
            self._subscribe()
        elif not wanted and self._subscription is not None:
            self._unsubscribe()
            self.get_logger().info("lazy: no subscribers left, unsubscribed from images")

    def _on_input_qos(self, event: Any) -> None:
        """A camera whose QoS cannot talk to our subscription: say exactly what to change."""
        try:
            offered = sorted(
                {
                    _describe_offer(info.qos_profile)
                    for info in self.get_publishers_info_by_topic(self._input_topic)
                }
            )
        except Exception:
            offered = []
        ours = describe_qos(self._input_qos) if self._input_qos is not None else "?"
        self.get_logger().warning(
            f"QoS mismatch on input {self._input_topic}: a publisher is incompatible with this "
            f"subscription ({ours}) in policy {_policy_name(event.last_policy_kind)} "
            f"({event.total_count} incompatible so far), so its images will NOT arrive. "
            f"Publishers offer: {', '.join(offered) or 'unknown'}. Set input_qos_reliability / "
            f"input_qos_durability to match (a best_effort camera needs "
            f"input_qos_reliability:=best_effort)."
        )

    def _on_output_qos(self, topic: str, qos: QoSProfile, event: Any) -> None:
        self.get_logger().warning(
            f"QoS mismatch on output {topic}: a subscriber requests QoS that this publisher "
            f"({describe_qos(qos)}) cannot offer, policy {_policy_name(event.last_policy_kind)}; "
            f"it will receive nothing. Change the subscriber, or output_qos_reliability / "
            f"output_qos_durability."
        )

    def _on_image(self, msg: Image | CompressedImage) -> None:
        """Executor thread: only store the newest frame; the worker does the work."""
        if self._state != "active":
            return
        self.stats.count("received")
        if self._mailbox.put(msg):
            self.stats.count("dropped")

    # ------------------------------------------------------------------ worker

    def _work(self) -> None:
        while not self._stop.is_set():
            msg = self._mailbox.take(timeout=0.25)
            if msg is None or self._stop.is_set():
                continue
            try:
                self._process(msg)
            except Exception as exc:  # last resort: the worker must outlive any frame
                self.stats.count("bad")
                self.get_logger().error(
                    f"unexpected error on a frame, skipped: {type(exc).__name__}: {exc}",
                    throttle_duration_sec=BAD_FRAME_LOG_PERIOD_S,
                )

    def _process(self, msg: Image | CompressedImage) -> None:
        start = time.perf_counter()
        header = msg.header
        try:
            if isinstance(msg, CompressedImage):
                rgb = compressed_msg_to_rgb(msg)
            else:
                rgb = image_msg_to_rgb(msg)
        except ImageConversionError as exc:
            self.stats.count("bad")
            self.get_logger().warning(
                f"skipped a bad image on {self._input_topic}: {exc}",
                throttle_duration_sec=BAD_FRAME_LOG_PERIOD_S,
            )
            return
        debug = self._publishers_by_name.get("debug_image")
        want_debug = debug is not None and debug.get_subscription_count() > 0
        with_maps = want_debug and bool(self._runtime["debug_heatmap"])
        try:
            with self._model_lock:
                if self._detector is None:
                    return
                detect_start = time.perf_counter()
                detection = self._detector.detect(rgb, return_maps=with_maps)[0]
                detect_s = time.perf_counter() - detect_start
                keypoint_names = self._detector.bundle.keypoint_names
        except Exception as exc:
            self.stats.count("bad")
            self.get_logger().warning(
                f"detection failed on a {rgb.shape[1]}x{rgb.shape[0]} frame, skipped: "
                f"{type(exc).__name__}: {exc}",
                throttle_duration_sec=BAD_FRAME_LOG_PERIOD_S,
            )
            return
        if self._stop.is_set():
            return
        if detection.degenerate is not None and detection.degenerate.any():
            # Flat or NaN maps have no peak: their "keypoints" would be the image corner with
            # score 0. Say so in the log and diagnostics; publish nothing for the frame.
            self.stats.count("degenerate")
            flags = zip(keypoint_names, detection.degenerate, strict=True)
            names = [name for name, bad in flags if bad]
            self.get_logger().warning(
                f"degenerate attention maps (flat or NaN) for keypoints {', '.join(names)}: "
                f"frame not published; check the bundle's context and the backbone weights",
                throttle_duration_sec=BAD_FRAME_LOG_PERIOD_S,
            )
            return
        uv, landmarks = self._smooth(header, detection)  # [n, K, 2], [n, J, 2] | None
        scores = np.stack([instance.scores for instance in detection.instances])  # [n, K]
        keep = scores >= self._runtime["score_threshold"]
        instance_of, ids = np.nonzero(keep)  # instance-major: instance 0's keypoints first
        ids = ids.astype(np.int32)
        kept_uv, kept_scores = uv[keep], scores[keep]
        cloud = keypoints_to_cloud(header, ids, kept_uv, kept_scores, instance_of)
        self._publish("keypoints", cloud)
        if landmarks is not None and "landmarks" in self._publishers_by_name:
            # Regressed landmarks have no attention peak of their own: they carry their
            # instance's mean keypoint score (the regressor uses every keypoint).
            count, num_landmarks = landmarks.shape[:2]
            landmark_scores = np.repeat(scores.mean(axis=1), num_landmarks).astype(np.float32)
            cloud = keypoints_to_cloud(
                header,
                np.tile(np.arange(num_landmarks, dtype=np.int32), count),
                landmarks.reshape(-1, 2),
                landmark_scores,
                np.repeat(np.arange(count), num_landmarks),
            )
            self._publish("landmarks", cloud)
        if landmarks is not None:
            landmarks = landmarks.reshape(-1, 2)
        if want_debug:
            self._publish_debug(rgb, header, ids, kept_uv, detection, landmarks, with_maps)
        # Reported apart: the model's time, and everything else (the node's overhead).
        self.stats.processed(time.perf_counter() - start, detect_s)

    def _publish_debug(
        self,
        rgb: np.ndarray,
        header: Header,
        ids: np.ndarray,
        uv: np.ndarray,
        detection: Any,
        landmarks: np.ndarray | None,
        with_maps: bool,
    ) -> None:
        bundle = self._bundle
        if bundle is None:
            return
        landmark_labels = None
        if landmarks is not None:
            landmark_labels = [f"L{j}" for j in range(landmarks.shape[0])]
        overlay = render_overlay(
            rgb,
            uv,
            [bundle.keypoint_colors[i] for i in ids],
            [str(i) for i in ids],
            maps=detection.maps[ids] if with_maps and detection.maps is not None else None,
            landmarks_uv=landmarks,
            landmark_labels=landmark_labels,
        )
        if self._publish("debug_image", rgb_to_image_msg(overlay, header)):
            self.stats.count("debug_published")

    def _publish(self, name: str, msg: Any) -> bool:
        """Publish, counting instead of raising on failure (RELIABLE under load may raise)."""
        publisher = self._publishers_by_name.get(name)
        if publisher is None:
            return False
        try:
            publisher.publish(msg)
        except Exception as exc:
            self.stats.count("publish_failures")
            self.get_logger().warning(
                f"publishing on ~/{name} failed: {exc}",
                throttle_duration_sec=BAD_FRAME_LOG_PERIOD_S,
            )
            return False
        return True

    # ------------------------------------------------------------------ smoothing

    def _reset_smoothers(self) -> None:
        from skp_core.smoothing import make_smoother

        runtime = self._runtime
        options = {
            "min_cutoff": runtime["smoothing_min_cutoff"],
            "beta": runtime["smoothing_beta"],
            "d_cutoff": runtime["smoothing_d_cutoff"],
        }
        with self._smoother_lock:
            self._keypoint_smoother = make_smoother(runtime["smoothing"], **options)
            self._landmark_smoother = make_smoother(runtime["smoothing"], **options)
            self._last_image_size = None

    def _smooth(self, header: Header, detection: Any) -> tuple[np.ndarray, np.ndarray | None]:
        """Filter keypoints and landmarks [n, K, 2] of every instance over the input stamps.

        Identity when smoothing is off. Instances are numbered left to right, so instance i's
        keypoint k is filtered as one stream.
        """
        stamp = _stamp_seconds(header)
        if stamp == 0.0:  # driver left the stamp empty: the arrival time is the best we have
            stamp = self.get_clock().now().nanoseconds * 1e-9
        instances = detection.instances
        pixels = np.stack([instance.pixels for instance in instances])
        with self._smoother_lock:
            if detection.image_size != self._last_image_size:
                self._keypoint_smoother.reset()
                self._landmark_smoother.reset()
                self._last_image_size = detection.image_size
            uv = self._keypoint_smoother(stamp, pixels.reshape(-1, 2)).reshape(pixels.shape)
            landmarks = None
            if detection.landmarks_pixels is not None:
                stacked = np.stack([instance.landmarks_pixels for instance in instances])
                flat = self._landmark_smoother(stamp, stacked.reshape(-1, 2))
                landmarks = flat.reshape(stacked.shape)
        return uv, landmarks

    # ------------------------------------------------------------------ info and diagnostics

    def _publish_info(self) -> None:
        """The latched id -> name/colour table (std_msgs/String holding JSON)."""
        bundle, settings = self._bundle, self._settings
        assert bundle is not None and settings is not None
        landmark_names = bundle.landmark_names or [
            f"landmark{j}" for j in range(bundle.num_landmarks or 0)
        ]
        info = {
            "format": INFO_FORMAT,
            "version": INFO_VERSION,
            "node": self.get_fully_qualified_name(),
            "bundle": settings.bundle,
            "model": self._model_id,
            "device": self._device,
            "keypoints": [
                {"id": i, "name": name, "color_rgb": list(color)}
                for i, (name, color) in enumerate(
                    zip(bundle.keypoint_names, bundle.keypoint_colors, strict=True)
                )
            ],
            "landmarks": [{"id": j, "name": name} for j, name in enumerate(landmark_names)],
            "topics": {
                name: self.resolve_topic_name(f"~/{name}")
                for name in ("keypoints", "landmarks", "debug_image")
                if name in self._publishers_by_name
            },
            "cloud_fields": ["id", "u", "v", "score"],
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
        self._publish("keypoint_info", String(data=json.dumps(info)))

    def _publish_diagnostics(self) -> None:
        if self._diag_publisher is None:
            return
        snap = self.stats.snapshot()
        settings = self._settings
        debug = self._publishers_by_name.get("debug_image")
        detector = self._detector
        info: dict[str, object] = {
            "model": self._model_id,
            "bundle": settings.bundle if settings else "",
            "device": self._device,
            "dtype": self._dtype,
            "num_keypoints": detector.num_keypoints if detector is not None else 0,
            "num_views": detector.num_views if detector is not None else 0,
            "readout": settings.readout if settings else "",
            "input_topic": self._input_topic,
            "input_transport": settings.input_transport if settings else "",
            "score_threshold": self._runtime["score_threshold"],
            "smoothing": self._runtime["smoothing"],
            "debug_subscribers": debug.get_subscription_count() if debug is not None else 0,
        }
        status = build_status(
            f"{self.get_fully_qualified_name()}: keypoint detector",
            self._device,
            self._state,
            self._subscription is not None,
            snap,
            info,
        )
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        try:
            self._diag_publisher.publish(msg)
        except Exception as exc:
            self.stats.count("publish_failures")
            self.get_logger().warning(
                f"publishing diagnostics failed: {exc}",
                throttle_duration_sec=BAD_FRAME_LOG_PERIOD_S,
            )


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
