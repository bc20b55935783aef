"""skp-replay: make image bags, replay them through the keypoint node, measure what comes back.

A robot team judges a perception node on recorded data: the same bag, replayed at the recorded
timing, must give the same keypoints, and the report says how many frames were lost, how late
results arrived and how steady the keypoints were. ``ros2 bag`` and ``rosbag2_py`` are not
installable everywhere, so this tool plays and records bags itself (through
:mod:`skp_ros.bag_io`) with plain rclpy.

Subcommands (``skp-replay SUBCOMMAND --help`` for all options):

* ``make-bag OUT_BAG``: write a bag of images from a folder, or of a deterministic camera sweep
  over a shipped photo, with header stamps at a fixed rate from a fixed epoch (so the same
  arguments always give the same bag).
* ``run BAG --out DIR``: publish the bag's images (original headers kept) at the recorded
  timing (scaled) or as fast as possible, optionally starting the node as a child process,
  record the node's outputs into a new bag, and write ``report.json``, an overlay strip and
  optionally a video.
* ``echo-node``: a tiny real node answering every image with fixed keypoints carrying the
  image's header; a smoke-test target for the player (and for a robot's plumbing).
* ``info BAG``: list a bag's topics.

From Python, :func:`replay_bag` runs ``run`` and returns the report as a dict, and
:func:`make_bag` writes a bag.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from skp_core.image_header import PixelLimitError, check_pixel_limit
from skp_core.overlay import draw_keypoints
from skp_core.palette import default_colors
from skp_core.progress import progress as progress_bar
from skp_ros.bag_io import (
    COMPRESSED_IMAGE_TYPE,
    IMAGE_TYPE,
    POINTCLOUD2_TYPE,
    STORAGE_FORMATS,
    BagError,
    BagWriter,
    bag_storage,
    bag_topics,
    find_image_topic,
    header_stamp_ns,
    message_class,
    ns_to_stamp,
    read_messages,
    replace_header_stamp,
)
from skp_ros.camera_motion import (
    CameraMotionError,
    read_camera_motion,
    tracking_error,
    write_camera_motion,
)
from skp_ros.camera_sweep import SAMPLE_PHOTOS, sample_photo, sweep_frame, sweep_matrix
from skp_ros.process import child_env, stop_child
from skp_ros.replay_geometry import depth_figures, side_topics, sweep_distances, sweep_side_messages

__all__ = [
    "BAG_EPOCH_NS",
    "DEFAULT_KEYPOINTS_TOPIC",
    "DEFAULT_TOPIC",
    "ReplayError",
    "main",
    "make_bag",
    "replay_bag",
]

DEFAULT_TOPIC = "/camera/image_raw"
DEFAULT_KEYPOINTS_TOPIC = "/skp_keypoints/keypoints"
BAG_EPOCH_NS = 1_700_000_000 * 1_000_000_000
"""First header stamp of generated bags: fixed, so bags are byte-for-byte reproducible."""
KEYPOINT_NODE_CMD = ("python", "-m", "skp_ros.keypoint_node")
ECHO_NODE_CMD = ("python", "-m", "skp_ros.replay", "echo-node")
ECHO_NODE_NAME = "skp_keypoints"  # same name as the real node, so the default topics line up
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm"})
DEFAULT_SWEEP_SIZE = (640, 480)
POLL_S = 0.02  # how often waits re-check their condition
WARMUP_PERIOD_S = 0.25
"""Resend period of the warm-up frame until the node answers it.

Discovery is asymmetric: our writer matching the node's reader does not mean the node's reader
has matched our writer yet (nor its keypoint writer our reader), and frames sent in between are
lost; measured here: anywhere from the first 2 frames to all of a 10-frame replay. So before
the replay the player sends the bag's first frame under a stamp 1 s before it until an answer
comes back, which proves both directions work. Warm-up outputs are neither recorded nor counted.
"""
WARMUP_OFFSET_NS = 1_000_000_000
MATCH_SETTLE_S = 0.5
"""Grace period after discovery when the warm-up is disabled (as ``ros2 bag play --delay``)."""
STRIP_HEIGHT = 240


class ReplayError(RuntimeError):
    """The replay could not run (no subscriber, node died, bad bag); the message says why."""


# --------------------------------------------------------------------------- make-bag


def list_images(folder: str | Path) -> list[Path]:
    """Image files of `folder`, sorted by name (the order a camera dump is usually named in)."""
    directory = Path(folder)
    if not directory.is_dir():
        raise ReplayError(f"{directory} is not a directory")
    files = sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ReplayError(f"{directory} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


def load_rgb(path: str | Path) -> np.ndarray:
    """An image file as RGB uint8 [H, W, 3] (grey and alpha images converted)."""
    try:
        check_pixel_limit(path)
    except PixelLimitError as exc:
        raise ReplayError(f"{path}: {exc}") from None
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ReplayError(f"OpenCV cannot read {path}")
    return np.ascontiguousarray(bgr[..., ::-1])


def frame_stamp_ns(index: int, rate_hz: float) -> int:
    """Header stamp of frame `index` in a generated bag: the fixed epoch plus index / rate."""
    return BAG_EPOCH_NS + round(index * 1e9 / rate_hz)


def compressed_topic(topic: str) -> str:
    """image_transport's name for the compressed stream of `topic`."""
    return topic if topic.endswith("/compressed") else f"{topic.rstrip('/')}/compressed"


def _bag_frames(
    images_dir: str | Path | None,
    sweep: str,
    frames: int | None,
    size: tuple[int, int] | None,
) -> tuple[int, Iterator[np.ndarray], list[np.ndarray] | None]:
    """(count, frames, camera motion) for make_bag.

    A folder's images (resized only if asked, no known motion) or a sweep (with each frame's
    photo-to-image map).
    """
    if images_dir is not None:
        files = list_images(images_dir)
        files = files[:frames] if frames is not None else files

        def from_files() -> Iterator[np.ndarray]:
            for path in files:
                rgb = load_rgb(path)
                if size is not None and (rgb.shape[1], rgb.shape[0]) != size:
                    rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
                yield rgb

        return len(files), from_files(), None
    photo = sample_photo(sweep)
    width, height = size or DEFAULT_SWEEP_SIZE
    count = 90 if frames is None else frames
    motion = [sweep_matrix(photo.shape, i, width, height) for i in range(count)]
    return count, (sweep_frame(photo, i, width, height) for i in range(count)), motion


def make_bag(
    out_bag: str | Path,
    *,
    images_dir: str | Path | None = None,
    sweep: str = "astronaut",
    frames: int | None = None,
    rate: float = 10.0,
    width: int | None = None,
    height: int | None = None,
    topic: str = DEFAULT_TOPIC,
    compressed: bool = False,
    storage: str = "sqlite3",
    frame_id: str = "camera",
    jpeg_quality: int = 90,
    progress: bool = True,
) -> dict[str, Any]:
    """Write an image bag and return a summary (path, topic, msgtype, frames, storage, rate).

    Frames come from `images_dir` (sorted; kept at their own size unless width and height are
    given) or from the camera sweep over photo `sweep` (default 90 frames at 640x480). Images
    are rgb8 ``sensor_msgs/Image``, or JPEG ``CompressedImage`` on ``<topic>/compressed``.
    Header stamp and bag timestamp of frame i are ``BAG_EPOCH_NS + i / rate``. A sweep bag
    also holds ``camera_motion.json``, the camera's true motion (skp_ros.camera_motion), and,
    as an RGB-D driver publishes them, ``camera_info`` and a registered 16UC1 ``depth/image_raw``
    in the image topic's namespace with each frame's stamp (skp_ros.replay_geometry).
    """
    from skp_ros.image_conversion import rgb_to_compressed_msg, rgb_to_image_msg

    if not math.isfinite(rate) or rate <= 0:
        raise ReplayError(f"rate must be a positive number of Hz, got {rate}")
    if (width is None) != (height is None):
        raise ReplayError("give both width and height, or neither")
    if frames is not None and frames < 1:
        raise ReplayError(f"frames must be >= 1, got {frames}")
    size = None if width is None or height is None else (int(width), int(height))
    count, images, motion = _bag_frames(images_dir, sweep, frames, size)
    out_topic = compressed_topic(topic) if compressed else topic
    msgtype = COMPRESSED_IMAGE_TYPE if compressed else IMAGE_TYPE
    sizes: set[tuple[int, int]] = set()
    info_topic, depth_topic = side_topics(out_topic)
    with BagWriter(out_bag, storage) as writer:
        for index, rgb in enumerate(
            progress_bar(images, total=count, desc="make-bag", unit="frame", disable=not progress)
        ):
            if compressed:
                msg = rgb_to_compressed_msg(rgb, quality=jpeg_quality)
            else:
                msg = rgb_to_image_msg(rgb)
            stamp_ns = frame_stamp_ns(index, rate)
            msg.header.stamp = ns_to_stamp(stamp_ns)
            msg.header.frame_id = frame_id
            if motion is not None:  # a sweep: the camera and the poster's depth are known
                info, depth = sweep_side_messages(index, rgb.shape[1], rgb.shape[0], msg.header)
                writer.write(info_topic, info, stamp_ns)
                writer.write(depth_topic, depth, stamp_ns)
            writer.write(out_topic, msg, stamp_ns)
            sizes.add((rgb.shape[1], rgb.shape[0]))
    if motion is not None:  # what the tracking error is measured against
        stamps = [frame_stamp_ns(index, rate) for index in range(count)]
        write_camera_motion(Path(out_bag), f"sweep:{sweep}", stamps, motion)
    summary = {
        "bag": str(out_bag),
        "storage": storage,
        "topic": out_topic,
        "msgtype": msgtype,
        "frames": count,
        "rate_hz": rate,
        "sizes": sorted(sizes),
        "source": str(images_dir) if images_dir is not None else f"sweep:{sweep}",
        "camera_info_topic": info_topic if motion is not None else None,
        "depth_topic": depth_topic if motion is not None else None,
    }
    return summary


# --------------------------------------------------------------------------- drawing


def draw_overlay(rgb: np.ndarray, ids: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """The frame with its keypoints drawn in the node's default palette, labelled by id."""
    palette = default_colors(int(np.max(ids)) + 1) if len(ids) else []
    colors = [palette[int(i)] for i in ids]
    return draw_keypoints(rgb, uv, colors, [str(int(i)) for i in ids])


def _caption(rgb: np.ndarray, text: str) -> np.ndarray:
    """Write `text` in the top-left corner, white on a dark band, so it reads on any frame."""
    cv2.rectangle(rgb, (0, 0), (rgb.shape[1], 18), (0, 0, 0), -1)
    cv2.putText(rgb, text, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (255, 255, 255), 1)
    return rgb


def _to_height(rgb: np.ndarray, height: int) -> np.ndarray:
    width = max(1, round(rgb.shape[1] * height / rgb.shape[0]))
    return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)


# --------------------------------------------------------------------------- statistics


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


def _rate(times_ns: Sequence[int]) -> float | None:
    """Events per second over the span of `times_ns` (None with fewer than two events)."""
    if len(times_ns) < 2:
        return None
    span = (max(times_ns) - min(times_ns)) / 1e9
    return (len(times_ns) - 1) / span if span > 0 else None


# --------------------------------------------------------------------------- run


@dataclass
class _Received:
    """One output message as it arrived: raw CDR plus wall and monotonic receive times."""

    topic: str
    wall_ns: int
    mono_ns: int
    data: bytes


@dataclass
class _State:
    """What the publishing thread and the executor thread share (guarded by `lock`)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    published: dict[int, tuple[int, int]] = field(default_factory=dict)  # stamp -> (index, mono)
    received: list[_Received] = field(default_factory=list)
    keypoint_stamps: set[int] = field(default_factory=set)
    latencies_ns: list[int] = field(default_factory=list)  # of matched outputs, in arrival order
    last_receive_mono: int = 0
    qos_problems: list[str] = field(default_factory=list)
    recording: bool = False  # set with the first replayed frame; warm-up traffic is not kept
    warmup_sent: dict[int, int] = field(default_factory=dict)  # stamp -> monotonic send ns
    warmup_latencies_ns: list[int] = field(default_factory=list)


def node_command(
    node_cmd: str | Sequence[str] | None,
    node_args: Sequence[str],
    image_topic: str,
    compressed: bool,
) -> list[str]:
    """The child's command line: `node_cmd`, then ROS args remapping `image` to the bag topic.

    A leading ``python``/``python3`` becomes this interpreter, so the child uses the same venv.
    """
    if node_cmd is None:
        command = list(KEYPOINT_NODE_CMD)
    elif isinstance(node_cmd, str):
        command = shlex.split(node_cmd)
    else:
        command = list(node_cmd)
    if not command:
        raise ReplayError("empty node command")
    if command[0] in ("python", "python3"):
        command[0] = sys.executable
    base = image_topic.removesuffix("/compressed") if compressed else image_topic
    ros_args = ["--ros-args", "-r", f"image:={base}"]
    if compressed:
        ros_args += ["-p", "input_transport:=compressed"]
    return [*command, *ros_args, *node_args]


def _log_tail(path: Path | None, lines: int = 30) -> str:
    if path is None or not path.is_file():
        return ""
    text = path.read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])


def _wait(condition: Any, timeout: float, child: subprocess.Popen[bytes] | None) -> bool:
    """Poll `condition` until true (True), the timeout (False) or the child's death (False)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline or (child is not None and child.poll() is not None):
            return False
        time.sleep(POLL_S)
    return True


def _prepare_recorded_dir(path: Path) -> None:
    """Replace a previous run's recorded bag; refuse to delete anything that is not a bag."""
    if path.exists():
        if not (path / "metadata.yaml").is_file():
            raise ReplayError(f"{path} exists and is not a bag; move it away")
        shutil.rmtree(path)


class _Player:
    """The replay's ROS side: image publisher, raw output subscriptions, executor thread."""

    def __init__(
        self,
        state: _State,
        publish_topic: str,
        image_msgtype: str,
        keypoints_topic: str,
        reliable: bool,
        depth: int,
    ) -> None:
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor

        from skp_ros.qos import make_qos

        self.state = state
        self.context = Context()
        rclpy.init(args=["skp_replay"], context=self.context)  # never parse our own argv
        self.node = rclpy.create_node("skp_replay", context=self.context)
        self.publish_qos = make_qos("reliable" if reliable else "best_effort", depth=depth)
        # Results must not be lost in our own queue: reliable and deep.
        self.output_qos = make_qos("reliable", depth=1000)
        self.publisher = self.node.create_publisher(
            message_class(image_msgtype), publish_topic, self.publish_qos
        )
        self.side_publishers: dict[str, Any] = {}
        self.keypoints_topic = keypoints_topic
        self.subscriptions: dict[str, Any] = {}
        self.subscribe(keypoints_topic, POINTCLOUD2_TYPE)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self._spin, name="skp_replay_spin", daemon=True)
        self.thread.start()

    def _spin(self) -> None:
        from rclpy.executors import ExternalShutdownException

        try:
            self.executor.spin()
        except (ExternalShutdownException, KeyboardInterrupt):
            pass

    def subscribe(self, topic: str, msgtype: str) -> None:
        """Record `topic` raw (bytes as received, so the recorded bag holds exactly them)."""
        from rclpy.event_handler import SubscriptionEventCallbacks

        def on_qos(event: Any, topic: str = topic) -> None:
            problem = (
                f"QoS of a publisher on {topic} is incompatible with our reliable subscription "
                f"(policy {getattr(event, 'last_policy_kind', '?')}); make it publish reliable"
            )
            with self.state.lock:
                self.state.qos_problems.append(problem)
            self.node.get_logger().error(problem)

        self.subscriptions[topic] = self.node.create_subscription(
            message_class(msgtype),
            topic,
            lambda data, topic=topic: self._on_output(topic, data),
            self.output_qos,
            raw=True,
            event_callbacks=SubscriptionEventCallbacks(incompatible_qos=on_qos),
        )

    def _on_output(self, topic: str, data: bytes) -> None:
        mono, wall = time.monotonic_ns(), time.time_ns()
        state = self.state
        stamp = None
        if topic == self.keypoints_topic:
            try:
                stamp = header_stamp_ns(data)
            except BagError:
                stamp = None
        with state.lock:
            if stamp is not None and stamp in state.warmup_sent:
                state.warmup_latencies_ns.append(mono - state.warmup_sent[stamp])
                return
            if not state.recording:
                return
            state.received.append(_Received(topic, wall, mono, bytes(data)))
            state.last_receive_mono = mono
            if stamp is not None:
                state.keypoint_stamps.add(stamp)
                if stamp in state.published:
                    state.latencies_ns.append(mono - state.published[stamp][1])

    def topic_types(self) -> dict[str, str]:
        return {name: types[0] for name, types in self.node.get_topic_names_and_types() if types}

    def add_side_topic(self, topic: str, msgtype: str) -> None:
        """Publish `topic` (camera_info, depth) beside the images, reliably, as recorded."""
        from skp_ros.qos import make_qos

        self.side_publishers[topic] = self.node.create_publisher(
            message_class(msgtype), topic, make_qos("reliable", depth=10)
        )

    def matched(self) -> bool:
        return (
            self.publisher.get_subscription_count() > 0
            and self.subscriptions[self.keypoints_topic].get_publisher_count() > 0
        )

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=5.0)
        self.thread.join(timeout=5.0)
        self.node.destroy_node()
        self.context.try_shutdown()
        # Free the DDS participant now, not at garbage collection (the demo replays many bags).
        self.context.destroy()


def _select(items: Sequence[Any], count: int) -> list[Any]:
    """`count` items spread evenly over `items` (first and last included)."""
    if count <= 0 or not items:
        return []
    if len(items) <= count:
        return list(items)
    positions = np.linspace(0, len(items) - 1, count).round().astype(int)
    return [items[p] for p in dict.fromkeys(positions.tolist())]


def _decode_image(message: Any) -> np.ndarray:
    from skp_ros.image_conversion import compressed_msg_to_rgb, image_msg_to_rgb

    msg = message.deserialize()
    if message.msgtype == COMPRESSED_IMAGE_TYPE:
        return compressed_msg_to_rgb(msg)
    return image_msg_to_rgb(msg, copy=True)


def _render_outputs(
    bag: Path,
    topic: str,
    keypoints: dict[int, tuple[np.ndarray, np.ndarray]],
    bag_index: dict[int, int],
    latencies: dict[int, float],
    out_dir: Path,
    strip_frames: int,
    video: bool,
    video_frames: int,
    video_fps: float,
    notes: list[str],
) -> tuple[str | None, str | None, list[int]]:
    """Write overlay_strip.png (and overlays.mp4) from the bag's frames and their keypoints.

    Tiles and video frames are captioned with the frame's index in the bag (not among the
    answered frames, which differ whenever a frame dropped). Returns the strip's path, the
    video's path and the bag indices in the strip.
    """
    order = sorted(keypoints, key=bag_index.__getitem__)
    strip_stamps = set(_select(order, strip_frames))
    video_stamps = set(order[:video_frames]) if video else set()
    wanted = strip_stamps | video_stamps
    if not wanted:
        return None, None, []
    index_of = bag_index
    tiles: dict[int, np.ndarray] = {}
    writer = None
    video_path = out_dir / "overlays.mp4"
    video_size: tuple[int, int] | None = None
    for message in read_messages(bag, [topic]):
        stamp = message.stamp_ns
        if stamp not in wanted:
            continue
        ids, uv = keypoints[stamp]
        try:
            frame = draw_overlay(_decode_image(message), ids, uv)
        except ValueError as exc:  # ImageConversionError: a bad frame must not lose the report
            notes.append(f"frame #{index_of[stamp]} could not be drawn: {exc}")
            continue
        text = f"#{index_of[stamp]}  {latencies.get(stamp, float('nan')):.1f} ms  K={len(ids)}"
        if stamp in strip_stamps:
            tiles[stamp] = _caption(_to_height(frame, STRIP_HEIGHT), text)
        if stamp in video_stamps:
            if writer is None:
                video_size = (frame.shape[1] // 2 * 2, frame.shape[0] // 2 * 2)
                fourcc = cv2.VideoWriter.fourcc(*"mp4v")
                writer = cv2.VideoWriter(str(video_path), fourcc, video_fps, video_size)
                if not writer.isOpened():
                    notes.append("cv2.VideoWriter cannot write mp4v here; video skipped")
                    video_stamps = set()
                    writer = None
                    continue
            assert video_size is not None
            if (frame.shape[1], frame.shape[0]) != video_size:
                frame = cv2.resize(frame, video_size, interpolation=cv2.INTER_AREA)
            writer.write(np.ascontiguousarray(_caption(frame, text)[..., ::-1]))
    strip_path = None
    if tiles:
        strip = np.concatenate([tiles[s] for s in sorted(tiles, key=index_of.get)], axis=1)
        strip_path = out_dir / "overlay_strip.png"
        cv2.imwrite(str(strip_path), np.ascontiguousarray(strip[..., ::-1]))
    written_video = None
    if writer is not None:
        writer.release()
        if video_path.is_file() and video_path.stat().st_size > 0:
            written_video = str(video_path)
        else:
            notes.append("cv2.VideoWriter produced no file; video skipped")
    strip_indices = sorted(index_of[s] for s in tiles)
    return (str(strip_path) if strip_path else None), written_video, strip_indices


def replay_bag(
    bag_path: str | Path,
    out_dir: str | Path,
    *,
    topic: str | None = None,
    publish_topic: str | None = None,
    fast: bool = False,
    rate_scale: float = 1.0,
    lockstep: bool = False,
    node_args: list[str] | None = None,
    node_cmd: str | Sequence[str] | None = None,
    keypoints_topic: str = DEFAULT_KEYPOINTS_TOPIC,
    record_topics: Sequence[str] = (),
    reliable: bool = False,
    depth: int = 10,
    record_storage: str | None = None,
    timeout: float = 10.0,
    startup_timeout: float = 120.0,
    warmup: bool = True,
    match_settle: float = MATCH_SETTLE_S,
    strip_frames: int = 6,
    video: bool = False,
    video_frames: int = 300,
    local: bool = False,
    progress: bool = True,
    quiet: bool = False,
) -> dict[str, Any]:
    """Replay a bag's image topic to the keypoint node and report on what came back.

    The images are published with their original headers on `publish_topic` (default: the
    bag's topic) at the recorded timing divided by `rate_scale`, back to back with `fast`, or
    in `lockstep`: each frame once the node has answered the previous one (or `timeout`
    seconds passed, which is noted and counted), so that what comes back does not depend on
    the machine's speed or load -- for regression tests; real-time behaviour is what
    skp-node-bench measures.
    If `node_args` or `node_cmd` is given, the node is started as a child process (default
    command: the keypoint node; `node_args` are ROS arguments such as ``["-p", "bundle:=DIR"]``)
    with its ``image`` input remapped to the published topic; otherwise an already-running
    node must be listening. Every message on `keypoints_topic` (and `record_topics`) is
    recorded, with its receive time, into ``out_dir/recorded``. Results are matched to inputs
    by header stamp. Unless `warmup` is off, the first frame is first sent under earlier stamps
    until the node answers, so discovery races cost no replayed frame (see WARMUP_PERIOD_S);
    `startup_timeout` bounds discovery plus that handshake. Writes ``out_dir/report.json``
    and ``out_dir/overlay_strip.png`` (and ``overlays.mp4`` if `video`); returns the report.
    `local` confines ROS 2 to loopback (set before rclpy is initialised in this process).
    """
    started = time.monotonic()
    bag = Path(bag_path)
    out = Path(out_dir)
    if fast and lockstep:
        raise ReplayError("choose one pace: fast or lockstep")
    if not fast and (not math.isfinite(rate_scale) or rate_scale <= 0):
        raise ReplayError(f"rate_scale must be > 0, got {rate_scale}")
    if timeout <= 0 or startup_timeout <= 0:
        raise ReplayError(
            f"timeouts must be > 0, got timeout {timeout} and startup_timeout {startup_timeout}"
        )
    try:
        image_topic, image_msgtype = find_image_topic(bag, topic)
        storage = bag_storage(bag)
        frames_in_bag = bag_topics(bag)[image_topic][1]
    except BagError as exc:
        raise ReplayError(str(exc)) from None
    record_storage = record_storage or storage
    if record_storage not in STORAGE_FORMATS:
        raise ReplayError(f"unknown storage {record_storage!r}; choose one of {STORAGE_FORMATS}")
    compressed = image_msgtype == COMPRESSED_IMAGE_TYPE
    out_topic = publish_topic or image_topic
    if compressed and not out_topic.endswith("/compressed"):
        out_topic = compressed_topic(out_topic)  # the node subscribes to <image>/compressed
    # camera_info and depth recorded beside the images go out beside the published images.
    in_topics = bag_topics(bag)
    side = {
        recorded: (published_as, in_topics[recorded][0])
        for recorded, published_as in zip(
            side_topics(image_topic), side_topics(out_topic), strict=True
        )
        if recorded in in_topics
    }
    depth_side = side.get(side_topics(image_topic)[1])
    out.mkdir(parents=True, exist_ok=True)
    recorded_path = out / "recorded"
    _prepare_recorded_dir(recorded_path)
    notes: list[str] = []

    if local:
        from skp_ros.ros_env import apply_local_ros_env

        domain = os.environ.get("ROS_DOMAIN_ID")
        apply_local_ros_env(int(domain) if domain and domain.isdigit() else None)

    child: subprocess.Popen[bytes] | None = None
    command: list[str] | None = None
    log_path: Path | None = None
    if node_args is not None or node_cmd is not None:
        extra = (
            [] if depth_side is None else ["-p", "use_depth:=true", "-r", f"depth:={depth_side[0]}"]
        )
        command = node_command(node_cmd, [*extra, *(node_args or [])], out_topic, compressed)
        log_path = out / "node.log"
        with log_path.open("wb") as log:
            child = subprocess.Popen(
                command,
                env=child_env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    state = _State()
    player: _Player | None = None
    exit_code: int | None = None
    stopped_early: str | None = None
    publish_failures = 0
    lockstep_timeouts = 0
    duplicate_stamps = 0
    publish_times: list[int] = []
    bag_times: list[int] = []
    warmup_info: dict[str, Any] = {"frames": 0, "answers": 0, "latency_ms": None}
    record_types = {keypoints_topic: POINTCLOUD2_TYPE}
    try:
        player = _Player(state, out_topic, image_msgtype, keypoints_topic, reliable, depth)
        for published_as, msgtype in side.values():
            player.add_side_topic(published_as, msgtype)
        side_messages = _side_messages_by_stamp(bag, side)
        if not _wait(player.matched, startup_timeout, child):
            raise ReplayError(_startup_problem(player, out_topic, keypoints_topic, child, log_path))
        if warmup:
            warmup_info = _warm_up(player, bag, image_topic, startup_timeout, child, log_path)
        else:
            time.sleep(match_settle)  # let the node's side of discovery catch up
        for extra in record_topics:
            if extra in record_types:
                continue
            if _wait(lambda t=extra: t in player.topic_types(), startup_timeout / 4, child):
                record_types[extra] = player.topic_types()[extra]
                player.subscribe(extra, record_types[extra])
            else:
                notes.append(f"record topic {extra} never appeared in the ROS graph; not recorded")

        bar = progress_bar(total=frames_in_bag, desc="replay", unit="frame", disable=not progress)
        first_bag_ns: int | None = None
        start_mono = time.monotonic()
        for index, message in enumerate(read_messages(bag, [image_topic])):
            if child is not None and child.poll() is not None:
                stopped_early = f"node exited with code {child.returncode} during the replay"
                break
            if not fast and not lockstep:
                first_bag_ns = message.timestamp_ns if first_bag_ns is None else first_bag_ns
                offset_s = (message.timestamp_ns - first_bag_ns) / 1e9 / rate_scale
                delay = start_mono + offset_s - time.monotonic()
                if delay > 0:
                    time.sleep(delay)  # pacing to the recorded timing, not waiting on a result
            stamp = message.stamp_ns
            with state.lock:
                state.recording = True
                duplicate = stamp in state.published
                if not duplicate:
                    state.published[stamp] = (index, time.monotonic_ns())
            duplicate_stamps += duplicate
            bag_times.append(message.timestamp_ns)
            try:
                for published_as, data in side_messages.get(stamp, ()):
                    player.side_publishers[published_as].publish(data)
                player.publisher.publish(message.data)
                publish_times.append(time.monotonic_ns())
            except Exception as exc:  # RELIABLE at full speed may fail transiently
                publish_failures += 1
                if not duplicate:
                    with state.lock:
                        state.published.pop(stamp, None)
                if publish_failures <= 3:
                    player.node.get_logger().warning(f"publish failed: {exc}")
            else:
                answered = not lockstep or duplicate or _wait_for_answer(state, stamp, timeout)
                if not answered:
                    lockstep_timeouts += 1
                    notes.append(
                        f"lockstep: frame {index} (stamp {stamp}) got no answer within "
                        f"{timeout:g} s; went on with the next frame"
                    )
            bar.update(1)
        bar.close()
        _wait_for_outputs(state, timeout, child)
    finally:
        if player is not None:
            player.close()
        if child is not None:
            exit_code = stop_child(child)

    with state.lock:
        received = sorted(state.received, key=lambda r: r.mono_ns)
        published = dict(state.published)
        qos_problems = list(state.qos_problems)
    notes.extend(dict.fromkeys(qos_problems))
    if duplicate_stamps:
        notes.append(
            f"{duplicate_stamps} frames repeat an earlier header stamp; only the first "
            "of each is matched"
        )
    recorded_counts: dict[str, int] = {}
    with BagWriter(recorded_path, record_storage) as writer:
        for topic_name, msgtype in record_types.items():
            writer.add_topic(topic_name, msgtype)
        for item in received:
            writer.write_raw(item.topic, record_types[item.topic], item.data, item.wall_ns)
        recorded_counts = dict(writer.counts)

    report = _analyse(received, published, keypoints_topic, publish_times, notes)
    latencies = report.pop("_latencies")
    keypoints = report.pop("_keypoints")
    points = report.pop("_points")
    bag_index = {stamp: published[stamp][0] for stamp in keypoints}
    try:
        motion = read_camera_motion(bag)
    except CameraMotionError as exc:
        motion = None
        notes.append(f"no tracking error: {exc}")
    answered = [(bag_index[s], s, ids, uv) for s, (ids, uv) in keypoints.items()]
    tracking = None if motion is None else tracking_error(answered, motion)
    # A sweep's poster is at a known distance: the node's metric keypoints must lie on it.
    distances = (
        {}
        if motion is None or depth_side is None
        else sweep_distances({s: i for s, (i, _) in published.items()})
    )
    points_3d = depth_figures(points, distances)
    video_fps = _rate(bag_times) or 10.0
    strip_path, video_path, strip_indices = _render_outputs(
        bag,
        image_topic,
        keypoints,
        bag_index,
        latencies,
        out,
        strip_frames,
        video,
        video_frames,
        video_fps,
        notes,
    )
    report = {
        "bag": str(bag),
        "storage": storage,
        "topic": image_topic,
        "msgtype": image_msgtype,
        "publish_topic": out_topic,
        "keypoints_topic": keypoints_topic,
        "mode": {
            "fast": fast,
            "lockstep": lockstep,
            "rate_scale": None if fast or lockstep else rate_scale,
            "reliable": reliable,
            "depth": depth,
        },
        "node_command": command,
        "node_exit_code": exit_code,
        "node_log": str(log_path) if log_path else None,
        "frames_in_bag": frames_in_bag,
        "warmup": warmup_info,
        "publish_failures": publish_failures,
        "lockstep_timeouts": lockstep_timeouts,
        "duplicate_input_stamps": duplicate_stamps,
        **report,
        "recorded_bag": str(recorded_path),
        "recorded_storage": record_storage,
        "recorded_counts": recorded_counts,
        "camera_motion_known": motion is not None,
        "tracking_error_px": tracking,
        "side_topics": {recorded: published_as for recorded, (published_as, _) in side.items()},
        "points_3d": points_3d,
        "overlay_strip": strip_path,
        "overlay_strip_frames": strip_indices,
        "overlay_video": video_path,
        "stopped_early": stopped_early,
        "wall_time_s": time.monotonic() - started,
        "notes": list(dict.fromkeys(notes)),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    if not quiet:
        print(format_summary(report))
    return report


def _warm_up(
    player: _Player,
    bag: Path,
    topic: str,
    timeout: float,
    child: subprocess.Popen[bytes] | None,
    log_path: Path | None,
) -> dict[str, Any]:
    """Send the first frame under earlier stamps until the node answers (see WARMUP_PERIOD_S).

    Then wait briefly for answers to the other warm-up frames, so the node is idle when the
    replay's first frame arrives. Returns frames sent, answers and the first answer's latency.
    """
    first = next(read_messages(bag, [topic]), None)
    if first is None:
        raise ReplayError(f"{bag}: topic {topic} holds no messages")
    state = player.state
    base = first.stamp_ns - WARMUP_OFFSET_NS
    sent = 0
    deadline = time.monotonic() + timeout
    next_send = 0.0
    while True:
        with state.lock:
            answered = bool(state.warmup_latencies_ns)
        if answered:
            break
        now = time.monotonic()
        if now > deadline or (child is not None and child.poll() is not None):
            problem = _startup_problem(
                player, player.publisher.topic_name, player.keypoints_topic, child, log_path
            )
            raise ReplayError(f"no answer to {sent} warm-up frames: {problem}")
        if now >= next_send:
            stamp = base + sent * 1000  # 1 us apart, increasing, all before the first frame
            with state.lock:
                state.warmup_sent[stamp] = time.monotonic_ns()
            try:
                player.publisher.publish(replace_header_stamp(first.data, stamp))
            except Exception as exc:  # transient publish failures: the next resend retries
                player.node.get_logger().warning(f"warm-up publish failed: {exc}")
            sent += 1
            next_send = now + WARMUP_PERIOD_S
        time.sleep(POLL_S)
    with state.lock:
        first_latency_s = state.warmup_latencies_ns[0] / 1e9

    def drained() -> bool:
        with state.lock:
            return len(state.warmup_latencies_ns) >= sent

    _wait(drained, 2 * first_latency_s + 0.1, child)
    with state.lock:
        answers = len(state.warmup_latencies_ns)
    return {"frames": sent, "answers": answers, "latency_ms": first_latency_s * 1e3}


def _endpoints(player: _Player, topic: str, publishers: bool) -> str:
    """Who is on `topic` (node names), to spot a stray node in the same ROS domain."""
    node = player.node
    infos = (
        node.get_publishers_info_by_topic if publishers else node.get_subscriptions_info_by_topic
    )(topic)
    names = [f"{i.node_namespace.rstrip('/')}/{i.node_name}" for i in infos]
    return ", ".join(names) or "none"


def _startup_problem(
    player: _Player,
    image_topic: str,
    keypoints_topic: str,
    child: subprocess.Popen[bytes] | None,
    log_path: Path | None,
) -> str:
    """Why the replay could not start, with what to check (the usual 'no output' causes)."""
    if child is not None and child.poll() is not None:
        return (
            f"the node exited with code {child.returncode} before it was ready; its log "
            f"({log_path}):\n{_log_tail(log_path)}"
        )
    missing = []
    if player.publisher.get_subscription_count() == 0:
        missing.append(f"nobody subscribes to {image_topic}")
    if player.subscriptions[keypoints_topic].get_publisher_count() == 0:
        missing.append(f"nobody publishes {keypoints_topic} (compatibly)")
    problems = "; ".join(missing + player.state.qos_problems) or (
        f"both topics are matched, but no output on {keypoints_topic} carried the stamp of a "
        f"frame we sent; subscribers of {image_topic}: {_endpoints(player, image_topic, False)}, "
        f"publishers of {keypoints_topic}: {_endpoints(player, keypoints_topic, True)}. Matched "
        f"topics with no data flowing (node names _NODE_NAME_UNKNOWN_) is what Fast DDS does "
        f"when a live process's shared-memory files were deleted from /dev/shm (e.g. by a "
        f"cleanup script): restart the node and this tool"
    )
    domain = os.environ.get("ROS_DOMAIN_ID", "0 (unset)")
    return (
        f"timed out waiting for the node ({problems}). Check that the node runs in ROS_DOMAIN_ID "
        f"{domain} with the same discovery range, that its input is remapped to {image_topic}, "
        f"and that its outputs are reliable"
        + (f". Node log ({log_path}):\n{_log_tail(log_path)}" if log_path else "")
    )


def _wait_for_answer(state: _State, stamp: int, timeout: float) -> bool:
    """Lockstep: wait until the node answered the frame stamped `stamp` (True) or not.

    A child that dies meanwhile is seen by the replay loop before the next frame.
    """

    def answered() -> bool:
        with state.lock:
            return stamp in state.keypoint_stamps

    return _wait(answered, timeout, None)


def _wait_for_outputs(state: _State, timeout: float, child: subprocess.Popen[bytes] | None) -> None:
    """Wait until every published frame has its output, or outputs stop coming, or timeout.

    A node that drops frames (it only processes the latest) never answers some stamps, so
    besides the hard `timeout` the wait ends once nothing arrived for a while: 1 s or five
    times the median latency so far, whichever is longer.
    """
    last_publish = time.monotonic_ns()
    deadline = time.monotonic() + timeout
    while True:
        with state.lock:
            answered = len(state.keypoint_stamps.intersection(state.published))
            expected = len(state.published)
            recent = state.latencies_ns[-50:]
            last_receive = state.last_receive_mono
        if answered >= expected:
            return
        if time.monotonic() > deadline or (child is not None and child.poll() is not None):
            return
        if last_receive:
            settle_ns = max(1e9, 5 * float(np.median(recent))) if recent else 1e9
            if time.monotonic_ns() - max(last_receive, last_publish) > settle_ns:
                return
        time.sleep(POLL_S)


def _safe_stamp(data: bytes) -> int | None:
    try:
        return header_stamp_ns(data)
    except BagError:
        return None


def _analyse(
    received: list[_Received],
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
        "publish_rate_hz": _rate(publish_times),
        "processing_rate_hz": _rate(receive_times),
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


def _side_messages_by_stamp(
    bag: Path, side: dict[str, tuple[str, str]]
) -> dict[int, list[tuple[str, bytes]]]:
    """The bag's camera_info / depth messages, by header stamp, as (publish topic, raw bytes)."""
    by_stamp: dict[int, list[tuple[str, bytes]]] = {}
    if not side:
        return by_stamp
    for message in read_messages(bag, list(side)):
        by_stamp.setdefault(message.stamp_ns, []).append((side[message.topic][0], message.data))
    return by_stamp


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


# --------------------------------------------------------------------------- echo node


def _echo_main(ros_args: list[str], local: bool) -> int:
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


# --------------------------------------------------------------------------- CLI


def _positive_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="skp-replay",
        description="Make image bags, replay them through the keypoint node, report.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    make = sub.add_parser("make-bag", help="write an image bag from a folder or a camera sweep")
    make.add_argument("out_bag", type=Path, help="bag directory to create (must not exist)")
    source = make.add_mutually_exclusive_group()
    source.add_argument("--images", type=Path, help="folder of images (sorted by name)")
    source.add_argument(
        "--sweep",
        default="astronaut",
        choices=SAMPLE_PHOTOS,
        help="camera sweep over this shipped photo (default: astronaut)",
    )
    make.add_argument("--frames", type=_positive_int, help="frames (sweep default: 90)")
    make.add_argument("--rate", type=_positive_float, default=10.0, help="Hz (default: 10)")
    make.add_argument("--width", type=_positive_int, help="width (sweep default: 640)")
    make.add_argument("--height", type=_positive_int, help="height (sweep default: 480)")
    make.add_argument("--topic", default=DEFAULT_TOPIC, help=f"default: {DEFAULT_TOPIC}")
    make.add_argument(
        "--compressed", action="store_true", help="JPEG CompressedImage on TOPIC/compressed"
    )
    make.add_argument("--jpeg-quality", type=int, default=90, help="default: 90")
    make.add_argument("--storage", choices=STORAGE_FORMATS, default="sqlite3")
    make.add_argument("--frame-id", default="camera", help="header frame_id (default: camera)")
    make.add_argument("--no-progress", action="store_true", help="no progress bar")

    run = sub.add_parser("run", help="replay a bag through the node and write a report")
    run.add_argument("bag", type=Path)
    run.add_argument("--out", type=Path, required=True, help="output directory")
    run.add_argument("--topic", help="image topic in the bag (default: its only image topic)")
    run.add_argument("--publish-topic", help="publish on this topic (default: the bag's topic)")
    pace = run.add_mutually_exclusive_group()
    pace.add_argument(
        "--rate-scale",
        type=_positive_float,
        default=1.0,
        help="2.0: twice the recorded speed (default: 1.0)",
    )
    pace.add_argument("--fast", action="store_true", help="publish as fast as possible")
    pace.add_argument(
        "--lockstep",
        action="store_true",
        help="publish each frame once the node answered the last (or --timeout passed): "
        "results that do not depend on the machine's speed, for regression tests",
    )
    run.add_argument(
        "--node-cmd",
        help="start this node command as a child (e.g. 'python -m skp_ros.replay echo-node'); "
        "'--ros-args -r image:=TOPIC ...' is appended",
    )
    run.add_argument("--bundle", help="start the keypoint node with this bundle")
    run.add_argument("--model", help="keypoint node 'model' parameter")
    run.add_argument("--device", help="keypoint node 'device' parameter (e.g. cpu)")
    run.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME:=VALUE",
        help="extra node parameter (repeatable)",
    )
    run.add_argument(
        "--keypoints-topic",
        default=DEFAULT_KEYPOINTS_TOPIC,
        help=f"default: {DEFAULT_KEYPOINTS_TOPIC}",
    )
    run.add_argument(
        "--record-topics", nargs="*", default=[], help="more topics to record (types from graph)"
    )
    run.add_argument(
        "--reliable", action="store_true", help="publish images reliable (default: best effort)"
    )
    run.add_argument(
        "--depth", type=_positive_int, default=10, help="image publisher depth (default: 10)"
    )
    run.add_argument(
        "--record-storage", choices=STORAGE_FORMATS, help="default: the input bag's storage"
    )
    run.add_argument(
        "--timeout",
        type=_positive_float,
        default=10.0,
        help="seconds to wait for the last outputs, and with --lockstep for each frame's "
        "(default: 10)",
    )
    run.add_argument(
        "--startup-timeout",
        type=_positive_float,
        default=120.0,
        help="seconds to wait for the node to answer (default: 120)",
    )
    run.add_argument(
        "--no-warmup",
        action="store_true",
        help="skip the warm-up handshake (the first frames may then be lost to discovery)",
    )
    run.add_argument(
        "--match-settle",
        type=float,
        default=MATCH_SETTLE_S,
        help=f"with --no-warmup: seconds between discovery and the first frame "
        f"(default: {MATCH_SETTLE_S})",
    )
    run.add_argument(
        "--strip-frames", type=int, default=6, help="frames in the overlay strip (default: 6)"
    )
    run.add_argument("--video", action="store_true", help="also write overlays.mp4")
    run.add_argument("--local", action="store_true", help="keep ROS 2 traffic on loopback")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")

    echo = sub.add_parser(
        "echo-node",
        help="smoke-test node: fixed keypoints for every image (ROS args after --ros-args)",
    )
    echo.add_argument("--local", action="store_true", help="keep ROS 2 traffic on loopback")

    info = sub.add_parser("info", help="list a bag's topics")
    info.add_argument("bag", type=Path)
    return parser


def _run_from_args(args: argparse.Namespace) -> int:
    node_args: list[str] | None = None
    if args.bundle or args.model or args.device or args.param or args.node_cmd:
        node_args = []
        for name in ("bundle", "model", "device"):
            if getattr(args, name):
                node_args += ["-p", f"{name}:={getattr(args, name)}"]
        for item in args.param:
            if ":=" not in item:
                raise ReplayError(f"--param expects NAME:=VALUE, got {item!r}")
            node_args += ["-p", item]
    report = replay_bag(
        args.bag,
        args.out,
        topic=args.topic,
        publish_topic=args.publish_topic,
        fast=args.fast,
        rate_scale=args.rate_scale,
        lockstep=args.lockstep,
        node_args=node_args,
        node_cmd=args.node_cmd,
        keypoints_topic=args.keypoints_topic,
        record_topics=args.record_topics,
        reliable=args.reliable,
        depth=args.depth,
        record_storage=args.record_storage,
        timeout=args.timeout,
        startup_timeout=args.startup_timeout,
        warmup=not args.no_warmup,
        match_settle=args.match_settle,
        strip_frames=args.strip_frames,
        video=args.video,
        local=args.local,
        progress=not args.no_progress,
    )
    return 0 if report["matched"] > 0 and not report["stopped_early"] else 1


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    # Everything from --ros-args on belongs to rclpy (only echo-node takes it).
    split = arguments.index("--ros-args") if "--ros-args" in arguments else len(arguments)
    args = build_parser().parse_args(arguments[:split])
    ros_args = arguments[split:]
    if ros_args and args.command != "echo-node":
        print("skp-replay: error: only echo-node takes --ros-args", file=sys.stderr)
        return 2
    try:
        if args.command == "make-bag":
            summary = make_bag(
                args.out_bag,
                images_dir=args.images,
                sweep=args.sweep,
                frames=args.frames,
                rate=args.rate,
                width=args.width,
                height=args.height,
                topic=args.topic,
                compressed=args.compressed,
                storage=args.storage,
                frame_id=args.frame_id,
                jpeg_quality=args.jpeg_quality,
                progress=not args.no_progress,
            )
            sizes = ", ".join(f"{w}x{h}" for w, h in summary["sizes"])
            print(
                f"wrote {summary['frames']} frames ({sizes}) from {summary['source']} to "
                f"{summary['bag']} ({summary['storage']}), {summary['topic']} "
                f"[{summary['msgtype']}] at {summary['rate_hz']} Hz"
            )
            return 0
        if args.command == "run":
            return _run_from_args(args)
        if args.command == "echo-node":
            return _echo_main(ros_args, args.local)
        if args.command == "info":
            print(f"{args.bag} ({bag_storage(args.bag)})")
            for name, (msgtype, count) in sorted(bag_topics(args.bag).items()):
                print(f"  {name}  {msgtype}  {count} messages")
            return 0
    except (ReplayError, BagError) as exc:
        print(f"skp-replay: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
