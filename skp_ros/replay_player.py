"""The replay's ROS side: publish a bag's frames, receive the node's outputs raw, wait on them.

Why raw: outputs are recorded exactly as they arrived (CDR bytes plus receive times) and only
decoded afterwards, so the executor thread does little more than stamp and store them.

Discovery is asymmetric: our writer matching the node's reader does not mean the node's
reader has matched our writer yet (nor its keypoint writer our reader), and frames sent in
between are lost; measured here: anywhere from the first 2 frames to all of a 10-frame replay.
So before the replay :func:`warm_up` sends the bag's first frame under a stamp 1 s before it
until an answer comes back, which proves both directions work. Warm-up outputs are neither
recorded nor counted.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from skp_ros.bag_io import (
    POINTCLOUD2_TYPE,
    BagError,
    header_stamp_ns,
    message_class,
    read_messages,
    replace_header_stamp,
)
from skp_ros.process import POLL_S, log_tail, wait_for
from skp_ros.replay_analysis import Received
from skp_ros.replay_errors import ReplayError

__all__ = [
    "MATCH_SETTLE_S",
    "Player",
    "PlayerState",
    "side_messages_by_stamp",
    "startup_problem",
    "wait_for_answer",
    "wait_for_outputs",
    "warm_up",
]

WARMUP_PERIOD_S = 0.25
"""Resend period of the warm-up frame until the node answers it (see the module docstring)."""
WARMUP_OFFSET_NS = 1_000_000_000
MATCH_SETTLE_S = 0.5
"""Grace period after discovery when the warm-up is disabled (as ``ros2 bag play --delay``)."""


@dataclass
class PlayerState:
    """What the publishing thread and the executor thread share (guarded by `lock`)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    published: dict[int, tuple[int, int]] = field(default_factory=dict)  # stamp -> (index, mono)
    received: list[Received] = field(default_factory=list)
    keypoint_stamps: set[int] = field(default_factory=set)
    latencies_ns: list[int] = field(default_factory=list)  # of matched outputs, in arrival order
    last_receive_mono: int = 0
    qos_problems: list[str] = field(default_factory=list)
    recording: bool = False  # set with the first replayed frame; warm-up traffic is not kept
    warmup_sent: dict[int, int] = field(default_factory=dict)  # stamp -> monotonic send ns
    warmup_latencies_ns: list[int] = field(default_factory=list)


class Player:
    """The replay's ROS side: image publisher, raw output subscriptions, executor thread."""

    def __init__(
        self,
        state: PlayerState,
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
            state.received.append(Received(topic, wall, mono, bytes(data)))
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


def warm_up(
    player: Player,
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
            problem = startup_problem(
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

    wait_for(drained, 2 * first_latency_s + 0.1, child)
    with state.lock:
        answers = len(state.warmup_latencies_ns)
    return {"frames": sent, "answers": answers, "latency_ms": first_latency_s * 1e3}


def _endpoints(player: Player, topic: str, publishers: bool) -> str:
    """Who is on `topic` (node names), to spot a stray node in the same ROS domain."""
    node = player.node
    infos = (
        node.get_publishers_info_by_topic if publishers else node.get_subscriptions_info_by_topic
    )(topic)
    names = [f"{i.node_namespace.rstrip('/')}/{i.node_name}" for i in infos]
    return ", ".join(names) or "none"


def startup_problem(
    player: Player,
    image_topic: str,
    keypoints_topic: str,
    child: subprocess.Popen[bytes] | None,
    log_path: Path | None,
) -> str:
    """Why the replay could not start, with what to check (the usual 'no output' causes)."""
    if child is not None and child.poll() is not None:
        return (
            f"the node exited with code {child.returncode} before it was ready; its log "
            f"({log_path}):\n{log_tail(log_path)}"
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
        + (f". Node log ({log_path}):\n{log_tail(log_path)}" if log_path else "")
    )


def wait_for_answer(state: PlayerState, stamp: int, timeout: float) -> bool:
    """Lockstep: wait until the node answered the frame stamped `stamp` (True) or not.

    A child that dies meanwhile is seen by the replay loop before the next frame.
    """

    def answered() -> bool:
        with state.lock:
            return stamp in state.keypoint_stamps

    return wait_for(answered, timeout, None)


def wait_for_outputs(
    state: PlayerState, timeout: float, child: subprocess.Popen[bytes] | None
) -> None:
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


def side_messages_by_stamp(
    bag: Path, side: dict[str, tuple[str, str]]
) -> dict[int, list[tuple[str, bytes]]]:
    """The bag's camera_info / depth messages, by header stamp, as (publish topic, raw bytes)."""
    by_stamp: dict[int, list[tuple[str, bytes]]] = {}
    if not side:
        return by_stamp
    for message in read_messages(bag, list(side)):
        by_stamp.setdefault(message.stamp_ns, []).append((side[message.topic][0], message.data))
    return by_stamp
